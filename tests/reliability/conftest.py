"""The reliability tests reuse the experiment-runner fixtures of tests/training/conftest.py."""

import hashlib
import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "mtlrec_training_conftest", Path(__file__).resolve().parents[1] / "training" / "conftest.py"
)
training_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(training_conftest)

# fixtures (pytest finds them by name in this module)
tiny = training_conftest.tiny
funnel_root = training_conftest.funnel_root
make_config = training_conftest.make_config
cli = training_conftest.cli


@pytest.fixture(scope="session")
def training():
    """The module tests/training/conftest.py (``DAYS``, ``config_file``, ``merge``, ``REPO``...)."""
    return training_conftest


@pytest.fixture(scope="session")
def snapshot():
    """``snapshot(directory) -> {relative path: sha256}`` of every file below it."""
    return _snapshot


def _snapshot(directory) -> dict:
    """{relative path: sha256 of the contents} of every file below ``directory``."""
    directory = Path(directory)
    out = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            out[str(path.relative_to(directory))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out
