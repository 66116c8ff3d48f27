"""The README's code runs as written, and what it saves loads in a fresh process."""

import pathlib
import re
import subprocess
import sys

import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_quick_start_lists_exactly_the_two_commands():
    text = README.read_text(encoding="utf-8")
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^make (\w+)", quick, re.M)
    assert commands == ["demo", "test"]


def test_layer_reuse_snippet_runs_and_reloads_in_fresh_process(tmp_path, monkeypatch):
    blocks = _python_blocks()
    assert blocks, "README has no python snippet"
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    saved = tmp_path / "my_mmoe.keras"
    assert saved.exists()

    x = np.linspace(0, 1, 4 * 32, dtype="float32").reshape(4, 32)
    np.save(tmp_path / "x.npy", x)
    expected = namespace["model"].predict(x, verbose=0)
    # A fresh interpreter that imports only keras and mtlrec.layers must be able to load it.
    script = (
        "import sys, numpy as np, keras, mtlrec.layers\n"
        "m = keras.saving.load_model(sys.argv[1], safe_mode=True)\n"
        "out = m.predict(np.load(sys.argv[2]), verbose=0)\n"
        "np.save(sys.argv[3], np.concatenate([out['ctr'], out['cvr']], axis=1))\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(saved), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
        check=True,
        timeout=300,
    )
    got = np.load(tmp_path / "y.npy")
    np.testing.assert_allclose(got, np.concatenate([expected["ctr"], expected["cvr"]], axis=1), atol=1e-6)
