"""SIGTERM (and Ctrl-C) as a request to stop ``train --follow`` after the current step."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading

logger = logging.getLogger("mtlrec.training")


class StopRequest:
    """A flag the follow loop reads after each training step and while it waits.

    ``installed()`` routes SIGTERM and SIGINT to it (in the main thread only; elsewhere,
    e.g. a test's thread, ``request()`` sets it).
    """

    def __init__(self):
        self.event = threading.Event()

    def request(self, reason: str = "asked") -> None:
        if not self.event.is_set():
            logger.warning("stop requested (%s): stopping after the current step", reason)
        self.event.set()

    def __bool__(self) -> bool:
        return self.event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True when a stop was requested."""
        return self.event.wait(seconds)

    @contextlib.contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        handler = lambda signum, frame: self.request(signal.Signals(signum).name)  # noqa: E731
        saved = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield self
        finally:
            for sig, previous in saved.items():
                signal.signal(sig, previous)
