"""SIGINT/SIGTERM as a request to stop at the next safe point, not an exception mid-step."""
from __future__ import annotations

import signal
import threading


class StopSignals:
    """While active, SIGINT and SIGTERM only record themselves; the loop polls `requested`.

    The training loop finishes the step it is in, saves a resumable checkpoint and exits with
    128 + the signal number. A second signal of the same kind while saving is ignored: the save
    is atomic and short, and cutting it off would only lose the checkpoint.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested: int | None = None
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.requested is None:
            self.requested = signum

    def __enter__(self) -> StopSignals:
        # Handlers can only be installed from the main thread (tests may call main() elsewhere).
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
