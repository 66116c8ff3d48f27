"""The ``mtlrec`` command's TensorFlow import: native start-up lines dropped, everything else
kept, optional packages hidden only while it runs."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mtlrec.backend_import import is_native_startup_line

REPO = Path(__file__).resolve().parents[1]

ONEDNN = ("I0000 00:00:1796676724.710286   22252 port.cc:153] oneDNN custom operations are on. "
          "You may see slightly different numerical results due to floating-point round-off errors")
CUDA = "I0000 00:00:1796676724.710976   22252 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used."
ABSL = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"


@pytest.mark.parametrize("line", [ONEDNN, CUDA, ABSL,
                                  "W1207 20:50:01.123456    901 cpu_feature_guard.cc:210] This TensorFlow binary is optimized"])
def test_native_startup_lines_are_recognised(line):
    assert is_native_startup_line(line)


@pytest.mark.parametrize("line", [
    "E0000 00:00:1796676724.710976   22252 cuda_dnn.cc:8310] Unable to register cuDNN factory",  # an error
    "WARNING: the day 2024-01-01 has no rows",
    "mtlrec: error: schema: unknown feature 'x'",
    "  I0000 00:00:1.0 1 port.cc:1] indented, so not from the native logger",
    "UserWarning: something",
])
def test_other_lines_are_kept(line):
    assert not is_native_startup_line(line)


def _run_in_child(tmp_path, body: str):
    """Run ``body`` in a fresh interpreter with ``tmp_path`` on the path; its (stdout, stderr)."""
    (tmp_path / "noisy_native.py").write_text(textwrap.dedent(f"""
        import os
        try:
            import fake_optional
            SAW_OPTIONAL = True
        except ImportError:
            SAW_OPTIONAL = False
        os.write(2, ({ABSL!r} + "\\n" + {ONEDNN!r} + "\\n").encode())
        os.write(2, b"a line of the library's own\\n")
        os.write(2, ({CUDA!r} + "\\n").encode())
        if os.environ.get("NOISY_FAILS"):
            raise RuntimeError("the native library did not load")
    """))
    (tmp_path / "fake_optional.py").write_text("VALUE = 7\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"}
    if "fail" in body:
        env["NOISY_FAILS"] = "1"
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(body)], capture_output=True,
                          text=True, env=env, timeout=60)
    return proc


def test_startup_lines_are_dropped_and_the_rest_kept(tmp_path):
    proc = _run_in_child(tmp_path, """
        from mtlrec.backend_import import import_backend_quietly
        import_backend_quietly(modules=("noisy_native",), hide=("fake_optional",))
        import noisy_native, fake_optional
        print(noisy_native.SAW_OPTIONAL, fake_optional.VALUE)
    """)
    assert proc.returncode == 0, proc.stderr
    # the optional package was hidden while the module loaded, and is importable after
    assert proc.stdout.split() == ["False", "7"]
    assert proc.stderr == "a line of the library's own\n"


def test_without_dropping_every_line_comes_through(tmp_path):
    proc = _run_in_child(tmp_path, """
        from mtlrec.backend_import import import_backend_quietly
        import_backend_quietly(modules=("noisy_native",), hide=(), drop_startup_lines=False)
        import noisy_native
        print(noisy_native.SAW_OPTIONAL)
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True"]
    assert proc.stderr.splitlines() == [ABSL, ONEDNN, "a line of the library's own", CUDA]


def test_a_failed_import_keeps_its_output_and_raises(tmp_path):
    proc = _run_in_child(tmp_path, """
        from mtlrec.backend_import import import_backend_quietly
        try:
            import_backend_quietly(modules=("noisy_native",), hide=("fake_optional",))
        except RuntimeError as err:
            print("raised:", err)
        import fake_optional  # made importable again after the failure
        print(fake_optional.VALUE)
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["raised: the native library did not load", "7"]
    assert proc.stderr == "a line of the library's own\n"


def test_the_command_prints_no_tensorflow_startup_lines(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [sys.executable, "-m", "mtlrec.cli", "generate", "--root", str(tmp_path / "data"), "--days", "1",
         "--start", "2024-01-01", "--rows", "200"],
        capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.startswith("wrote 1 days (2024-01-01 .. 2024-01-01), 200 rows each")
