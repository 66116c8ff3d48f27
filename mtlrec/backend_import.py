"""TensorFlow and Keras imported for the ``mtlrec`` command: quietly, and without the
optional packages the command never uses.

Two costs of ``import tensorflow`` that a command pays for nothing:

- **Start-up lines.** TensorFlow's native libraries print informational lines on stderr
  while they load ("oneDNN custom operations are on", "Could not find cuda drivers",
  "All log messages before absl::InitializeLog() ..."), twice, before any log level set from
  Python applies to them. A command's output should hold its own lines only, so the import
  runs with stderr captured at the file-descriptor level and only those native INFO and
  WARNING lines are dropped; anything else written meanwhile (a Python warning, an error
  message, a traceback of a failed import) is written out as it came.
- **Optional packages.** Keras imports scikit-learn (for its estimator wrappers) and
  matplotlib (for its image gallery) when they are installed, and TensorFlow Lite imports
  JAX: about 1.6 s of a 5 s start-up on a machine that has all three, for a command that
  trains and serves with TensorFlow. They are hidden while TensorFlow and Keras load (each
  of those imports is optional and guarded there), then made importable again, so a later
  ``import matplotlib`` (``mtlrec report``) works as usual.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import sys
import tempfile

# ``I1207 20:50:01.123456   22134 port.cc:153] ...`` (absl's INFO and WARNING prefixes) and
# absl's notice that it logs to stderr until initialised.
_NATIVE_STARTUP_LINE = re.compile(
    r"^(?:[IW]\d{4} \d\d:\d\d:[\d.]+ +\d+ [\w.-]+:\d+\] "
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called)"
)
UNUSED_BY_THE_COMMAND = ("sklearn", "matplotlib", "jax")


def is_native_startup_line(line: str) -> bool:
    return bool(_NATIVE_STARTUP_LINE.match(line))


def import_backend_quietly(modules=("tensorflow", "keras"), hide=UNUSED_BY_THE_COMMAND,
                           drop_startup_lines: bool = True) -> None:
    """Import ``modules`` with native start-up lines dropped from stderr (unless
    ``drop_startup_lines`` is false) and the ``hide`` packages unimportable meanwhile; a no-op
    when they are all imported already."""
    if all(name in sys.modules for name in modules):
        return
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        hide = tuple(name for name in hide if name != "jax")
    hidden = [name for name in hide if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # `import name` raises ImportError
    try:
        with _startup_lines_dropped() if drop_startup_lines else contextlib.nullcontext():
            for name in modules:
                importlib.import_module(name)
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


@contextlib.contextmanager
def _startup_lines_dropped():
    """Capture file descriptor 2 meanwhile; then write out what came, without the native
    start-up lines."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (AttributeError, OSError, ValueError):  # no file descriptor 2 to capture
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", errors="replace")
            kept = [line for line in text.splitlines() if not is_native_startup_line(line)]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")
                sys.stderr.flush()
