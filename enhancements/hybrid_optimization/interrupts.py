"""Ctrl-C during a search, as PySR handles it: the first interrupt asks the search to stop
at its next safe point (it then finishes the hall of fame and returns what it found);
a second interrupt aborts at once with ``KeyboardInterrupt``.

    >>> with StopRequest() as stop:
    ...     stop.requested
    False

Outside the main thread Python delivers no signals to handlers installed there, so the
handler is installed only in the main thread; elsewhere ``requested`` stays False and a
``KeyboardInterrupt`` (if one arrives) propagates as usual.
"""
from __future__ import annotations

import signal
import threading


class StopRequest:
    """A context manager that turns the first SIGINT into ``requested = True``.

    The previous SIGINT handler is restored on exit, and also at the first interrupt, so
    that a second Ctrl-C reaches it (Python's default handler raises KeyboardInterrupt).
    """

    def __init__(self):
        self.requested = False
        self._previous = None
        self._installed = False

    def _handle(self, signum, frame) -> None:
        self.requested = True
        self._restore()

    def _restore(self) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            try:
                self._previous = signal.signal(signal.SIGINT, self._handle)
                self._installed = True
            except ValueError:  # an embedded interpreter that refuses handlers
                self._installed = False
        return self

    def __exit__(self, *exc) -> None:
        self._restore()
