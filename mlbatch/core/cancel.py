"""SIGTERM and SIGINT as an exception, so that long operations clean up what they started."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class Cancelled(BaseException):
    """SIGTERM or SIGINT reached the process (cron, Rundeck, CI, Ctrl-C)."""


@contextlib.contextmanager
def cancel_on_signals() -> Iterator[None]:
    """invoke forwards only Ctrl-C to us; cron, Rundeck and CI send SIGTERM. Both cancel."""

    received: list[int] = []

    def handler(signum, frame):
        if not received:  # a second signal must not interrupt the teardown of the first
            received.append(signum)
            raise Cancelled(signal.Signals(signum).name)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
