"""The package's layout rules: no import circle, small folders, layers importable without TensorFlow."""

import ast
import os
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "mtlrec"


def _modules():
    """module name -> file, for every module of the package."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(path, name, modules):
    """The mtlrec modules a module imports anywhere in it (module level or inside functions)."""
    found = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in modules else base)
    return {m for m in found if m in modules and m != name}


def import_graph():
    modules = _modules()
    return {name: _imports(path, name, modules) for name, path in modules.items()}


def import_cycles(graph):
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_cycle_finder_finds_a_circle_through_a_function_level_import():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_in_the_package_counting_imports_inside_functions():
    graph = import_graph()
    assert "mtlrec.training.trainer" in graph and graph["mtlrec.training.trainer"]
    assert import_cycles(graph) == []


def test_no_folder_holds_more_than_16_modules_and_training_itself_at_most_12():
    for folder in [PACKAGE, *[p for p in PACKAGE.rglob("*") if p.is_dir() and p.name != "__pycache__"]]:
        count = len(list(folder.glob("*.py")))
        limit = 12 if folder == PACKAGE / "training" else 16
        assert count <= limit, f"{folder.relative_to(PACKAGE.parent)}: {count} modules, at most {limit}"


def test_every_sub_package_says_in_its_docstring_what_lives_there():
    for init in PACKAGE.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and len(doc.split()) >= 5, f"{init.relative_to(PACKAGE.parent)}: no docstring"


def _run_on_backend(backend, code):
    env = dict(os.environ, KERAS_BACKEND=backend)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
        cwd=PACKAGE.parent,
    )


def test_layers_import_and_run_without_tensorflow_until_a_tensorflow_only_layer_is_used():
    pytest.importorskip("jax")
    code = (
        "import sys, numpy as np\n"
        "import mtlrec.layers as L\n"
        "assert 'tensorflow' not in sys.modules, 'import mtlrec.layers imported TensorFlow'\n"
        "out = L.Expert([4], seed=1)(np.ones((2, 3), 'float32'))\n"
        "assert tuple(out.shape) == (2, 4)\n"
        "assert 'tensorflow' not in sys.modules\n"
        "try:\n"
        "    L.FeatureEmbedding\n"
        "except ImportError as err:\n"
        "    print(err)\n"
        "for module in ('feature_embedding', 'dynamic_id_map'):\n"
        "    try:\n"
        "        __import__('mtlrec.layers.embedding.' + module)\n"
        "    except ImportError as err:\n"
        "        print(err)\n"
        "assert 'tensorflow' not in sys.modules\n"
    )
    result = _run_on_backend("jax", code)
    assert result.returncode == 0, result.stderr[-2000:]
    needs = "needs the TensorFlow backend (KERAS_BACKEND=tensorflow); this process runs Keras on 'jax'"
    assert result.stdout.splitlines() == [
        f"mtlrec.layers.FeatureEmbedding {needs}",
        f"mtlrec.layers.embedding (FeatureEmbedding, DynamicIdMap) {needs}",
        f"mtlrec.layers.embedding (FeatureEmbedding, DynamicIdMap) {needs}",
    ]


def test_public_layer_paths_and_registered_names_stay():
    import keras

    import mtlrec.layers as L

    for name in L.__all__:
        cls = getattr(L, name)
        assert keras.saving.get_registered_name(cls) == f"mtlrec>{name}"
