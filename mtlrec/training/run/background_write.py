"""A write that runs in a thread while the caller goes on (the end-of-day checkpoint)."""

from __future__ import annotations

import threading


class BackgroundWrite:
    """Runs ``write(*args)`` in a thread; ``wait`` returns its result or raises its error.

    The caller must call ``wait`` on every path (``try``/``finally``) before it records the
    write as done or lets another write of the same files begin. The write keeps its own
    crash safety (``mtlrec.conventions.atomic``): a kill while it runs leaves the last
    complete files, as a kill during a write in the caller's thread does.
    """

    def __init__(self, write, *args, name: str = "mtlrec-write"):
        self._result = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(write, args), name=name)
        self._thread.start()

    def _run(self, write, args) -> None:
        try:
            self._result = write(*args)
        except BaseException as err:  # noqa: BLE001 (handed to the waiting thread)
            self._error = err

    def wait(self):
        """Block until the write is done; its return value, or its exception raised here."""
        self._thread.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return self._result
