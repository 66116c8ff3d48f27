"""Configs are data, never code: safe YAML only, no eval, no pickle, `.keras` with safe_mode=True."""

import ast
import json
import zipfile
from pathlib import Path

import keras
import pytest

from mtlrec.cli import main

PACKAGE = Path(__file__).resolve().parents[2] / "mtlrec"
PAYLOAD = '!!python/object/apply:os.system ["touch {sentinel}"]'


def test_a_python_tag_in_a_config_is_refused_and_never_run(tmp_path, funnel_root, training, capsys):
    sentinel = tmp_path / "pwned"
    config = training.config_file(tmp_path, funnel_root)
    text = config.read_text().replace("name: tiny_esmm", "name: " + PAYLOAD.format(sentinel=sentinel))
    config.write_text(text)
    assert main(["train", str(config), "--day", "2024-01-01"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"mtlrec: error: {config}:1: invalid YAML: ")
    assert "python/object/apply:os.system" in line
    assert not sentinel.exists() and not (tmp_path / "run").exists()


def test_a_python_tag_in_a_generator_knob_is_refused(tmp_path, capsys):
    sentinel = tmp_path / "pwned"
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--root", str(tmp_path / "g"), "--days", "1", "--start", "2024-01-01",
              "--rows", "10", "--knob", "num_users=" + PAYLOAD.format(sentinel=sentinel)])
    assert exit_info.value.code == 2  # argparse: the knob does not parse
    assert "num_users" in capsys.readouterr().err
    assert not sentinel.exists()


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
            yield node, owner, name


def test_the_package_has_no_eval_exec_pickle_or_unsafe_loading():
    """Every module of mtlrec, parsed: what would turn data into code is absent."""
    banned_imports = {"pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve", "joblib"}
    problems, files = [], sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 40
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                problems += [f"{path}: import {a.name}" for a in node.names if a.name.split(".")[0] in banned_imports]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in banned_imports:
                problems.append(f"{path}: from {node.module} import")
        for node, owner, name in _calls(tree):
            if isinstance(node.func, ast.Name) and name in ("eval", "exec", "compile", "__import__"):
                problems.append(f"{path}:{node.lineno}: {name}()")
            if owner == "yaml" and name in ("load", "load_all", "unsafe_load", "full_load", "compose", "compose_all"):
                loader = {k.arg: k.value for k in node.keywords}.get("Loader")
                if not (isinstance(loader, ast.Attribute) and loader.attr in ("SafeLoader", "CSafeLoader")):
                    problems.append(f"{path}:{node.lineno}: yaml.{name} without SafeLoader")
            for keyword in node.keywords:
                if keyword.arg in ("safe_mode", "allow_pickle") and isinstance(keyword.value, ast.Constant):
                    if keyword.value.value is (keyword.arg == "allow_pickle"):
                        problems.append(f"{path}:{node.lineno}: {keyword.arg}={keyword.value.value}")
    assert problems == []


def test_a_runs_model_saves_without_lambda_and_loads_with_safe_mode(tmp_path, training):
    from mtlrec.training.config import load_config
    from mtlrec.training.trainer import Trainer

    config = load_config(training.config_file(tmp_path, tmp_path))
    schema = json.loads(json.dumps(training.SCHEMA))
    schema["numeric"][1].update(mean=0.1, std=0.05)
    model = Trainer(config, schema).model
    path = tmp_path / "model.keras"
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        saved = archive.read("config.json").decode()
        assert not [n for n in archive.namelist() if n.endswith((".pkl", ".pickle"))]
    assert '"class_name": "Lambda"' not in saved and "__lambda__" not in saved
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert [w.shape for w in loaded.weights] == [w.shape for w in model.weights]
