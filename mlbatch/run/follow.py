"""`invoke logs RUN --follow`: a run's bucket log as it grows, until the run ends.

A reader only: it never starts, cancels or deletes anything, so Ctrl-C (or SIGTERM) stops
the following and leaves the run going (`runs.wait`'s Ctrl-C cancels; this one does not).
What it prints is what `invoke logs` prints: on a terminal, control characters made
visible; into a file or a pipe, the log's bytes, each log object after its heading line.
Notices (following, ended, stopped) go to stderr, so a redirected stdout holds the log only.
"""

from __future__ import annotations

import codecs
import contextlib
import signal
import sys
import time
from collections.abc import Iterator
from typing import BinaryIO, TextIO

from mlbatch.core import runs
from mlbatch.core.bucket import Bucket
from mlbatch.core.text import visible
from mlbatch.run.records import log_parts
from mlbatch.ui import Say

POLL = 1.0  # seconds between reads of the run's records
CHUNK = 4 * 1024 * 1024  # bytes of a log read at a time


class _Out:
    """The terminal (visible text, decoded across chunk boundaries) or a file/pipe (raw bytes)."""

    def __init__(self, out: TextIO):
        self.text = out
        self.raw: BinaryIO | None = None if out.isatty() else getattr(out, "buffer", None)
        self.decoders: dict[str, codecs.IncrementalDecoder] = {}

    def write(self, key: str, data: bytes) -> None:
        if self.raw is not None:
            self.raw.write(data)
            self.raw.flush()
            return
        decoder = self.decoders.setdefault(key, codecs.getincrementaldecoder("utf-8")(errors="replace"))
        self.text.write(visible(decoder.decode(data)))
        self.text.flush()


@contextlib.contextmanager
def _sigterm_stops() -> Iterator[None]:
    """SIGTERM stops the following as Ctrl-C does (a KeyboardInterrupt), never the run."""

    def stop(signum, frame):  # noqa: ARG001 - the signal handler's signature
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _notice(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def follow_log(
    bucket: Bucket, run_id: str, out: TextIO | None = None, notice: Say = _notice, poll: float = POLL
) -> runs.ResultRecord | None:
    """Print the run's logs as they grow until its result.json appears; its result, or None
    when the following was stopped (Ctrl-C, SIGTERM) before the run ended."""
    log_parts(bucket, run_id)  # NotFound for a run that does not exist, before anything is printed
    target = _Out(out or sys.stdout)
    offsets: dict[str, int] = {}
    notice(f"following run {run_id} until it ends; Ctrl-C stops following (the run goes on)")
    try:
        with _sigterm_stops():
            while True:
                result = runs.read_result(bucket, run_id)  # before the logs: all they hold at the end is shown
                for header, key in log_parts(bucket, run_id):
                    if key not in offsets:
                        offsets[key] = 0
                        target.write(key, header.encode())
                    while data := bucket.read(key, start=offsets[key], end=offsets[key] + CHUNK):
                        offsets[key] += len(data)
                        target.write(key, data)
                if result is not None:
                    notice(f"run {run_id} ended: {result.status} (exit code {result.run_exit_code})")
                    return result
                time.sleep(poll)
    except KeyboardInterrupt:
        notice(f"stopped following run {run_id}; the run goes on (`invoke runs.show {run_id}`, `invoke runs.wait {run_id}`)")
        return None
