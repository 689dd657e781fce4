"""The controller's echo of a run's output to the caller's terminal: bounded, whatever the log's size.

The bucket log is the record; the terminal only has to keep up. Lines go through a bounded
queue to a printer thread; when the terminal falls behind, lines are skipped, counted, and
the count is said. Very long lines are cut for the terminal. Reading the bucket log back
(the end a self-deleted VM's console missed; a second trigger following a run) goes by
byte ranges, so memory stays bounded by the chunk size, not the log size.

Job output is shown, never obeyed: a job's escape sequences (a window title, a cleared
screen, a line overwritten by CR, a bell) would act on the operator's terminal, so every
control character but TAB is made visible (`mlbatch.core.text.visible`, as `cat -v` shows
them). The bucket log keeps the bytes the job wrote.
"""

from __future__ import annotations

import queue
import sys
import threading
from typing import TextIO

from mlbatch.core.bucket import Bucket
from mlbatch.core.errors import MlbatchError
from mlbatch.core.text import visible
from mlbatch.ui import Say

QUEUE_LINES = 2000  # lines waiting for the terminal before the echo starts skipping
MAX_LINE = 4096  # characters of one line shown; the rest is counted
READ_CHUNK = 4 * 1024 * 1024  # bytes of the bucket log read at a time
TAIL_BYTES = 1024 * 1024  # how far back the end of a log is searched for the last line shown


def show_log(data: bytes, out: TextIO | None = None) -> None:
    """`invoke logs`: on a terminal, the log as the echo shows it (control characters made
    visible); into a file or a pipe, its exact bytes, so `invoke logs RUN > run.log` is a
    copy of the record (escape sequences and bytes that are not UTF-8 included)."""
    out = out or sys.stdout
    binary = getattr(out, "buffer", None)
    if out.isatty() or binary is None:  # a text-only stream (no bytes under it) gets the text too
        out.write(visible(data.decode(errors="replace")))
        out.flush()
    else:
        out.flush()
        binary.write(data)
        binary.flush()


def _cut(line: str) -> str:
    return line if len(line) <= MAX_LINE else f"{line[:MAX_LINE]}… ({len(line) - MAX_LINE} more characters)"


class BoundedEcho:
    def __init__(self, echo: Say):
        self._echo = echo
        self._queue: queue.Queue[str | None] = queue.Queue(QUEUE_LINES)
        self._skipped = 0
        self._lock = threading.Lock()
        self.last = ""  # the last line accepted, to pick up from the bucket log after it
        self._thread = threading.Thread(target=self._print, name="console-echo", daemon=True)
        self._thread.start()

    def line(self, text: str) -> None:
        self.last = _cut(text)  # as the bucket log has it, to find the place there
        text = _cut(visible(text))
        with self._lock:
            try:
                if self._skipped:  # the gap is said where it is, before the next line shown
                    self._queue.put_nowait(self._notice(self._skipped))
                    self._skipped = 0
                self._queue.put_nowait(text)
            except queue.Full:
                self._skipped += 1

    @staticmethod
    def _notice(skipped: int) -> str:
        return f"[mlbatch] {skipped} line(s) of output not shown here (the terminal fell behind); `invoke logs` has them"

    def _print(self) -> None:
        while (text := self._queue.get()) is not None:
            self._echo(text)

    def close(self) -> None:
        with self._lock:
            if self._skipped:
                self._queue.put(self._notice(self._skipped))
        self._queue.put(None)
        self._thread.join()


def echo_log_after(bucket: Bucket, key: str, last_shown: str, echo: BoundedEcho) -> None:
    """Echo what the log holds after the line `last_shown` (searched in its last TAIL_BYTES only)."""
    try:
        size = bucket.size(key)
        start = max(0, size - TAIL_BYTES)
        tail = bucket.read(key, start=start).decode(errors="replace").split("\n")
    except MlbatchError:
        return
    if tail[-1] == "":
        tail.pop()  # the log ends with a newline; only LF ends a line, as on the console
    if start:
        tail = tail[1:]  # the first line of a range is probably cut
    index = len(tail) - tail[::-1].index(last_shown) if last_shown in tail else 0
    if not index and start:
        echo.line(f"[mlbatch] ({start} earlier bytes of the log are in `invoke logs`)")
    for line in tail[index:]:
        echo.line(line)


class LogFollower:
    """New bytes of a run's bucket logs since the last call, as lines, reading by ranges."""

    def __init__(self) -> None:
        self._offsets: dict[str, int] = {}
        self._pending: dict[str, bytes] = {}

    def follow(self, bucket: Bucket, keys: list[str], echo: BoundedEcho) -> None:
        for key in keys:
            offset = self._offsets.get(key, 0)
            while True:
                data = bucket.read(key, start=offset, end=offset + READ_CHUNK)
                if not data:
                    break
                offset += len(data)
                *lines, rest = (self._pending.get(key, b"") + data).split(b"\n")
                for line in lines:
                    echo.line(line.decode(errors="replace"))
                if len(rest) > MAX_LINE * 4:  # a line with no end in sight: show its start, keep going
                    echo.line(rest.decode(errors="replace"))
                    rest = b""
                self._pending[key] = rest
            self._offsets[key] = offset
