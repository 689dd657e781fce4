"""The attempt's log: every byte the job writes, in order, kept on the instance's disk and
appended to the bucket log while the job runs.

- Bytes, not lines: `\\r` progress bars, lines of megabytes with no newline and bytes that
  are not UTF-8 reach the bucket exactly as the job wrote them.
- The local file is the record; every `interval` seconds, backing off to `max_interval`
  as the run ages, only what is new is appended to the bucket object (`Bucket.append`: a
  file append, or a GCS compose of the new chunk), never the whole log again. Bytes sent
  to the bucket grow linearly with the log (`bytes_uploaded`); close() appends the rest.
- The console (docker logs / serial port) is a convenience that must never slow the job's
  log down: it gets the bytes through a bounded queue, and when it falls behind, what it
  skipped is counted and said there ("N bytes not shown here; the bucket log has them").
- A size cap (`max_bytes`) keeps the first bytes and says so in the log's last line.
"""

from __future__ import annotations

import queue
import sys
import threading
from pathlib import Path
from typing import BinaryIO

from mlbatch.core.bucket import Bucket

APPEND_CHUNK = 32 * 1024 * 1024  # bytes per bucket append: bounds the sink's memory
CONSOLE_QUEUE = 256  # chunks waiting for the console before it starts skipping


class LogSink:
    def __init__(
        self,
        bucket: Bucket,
        key: str,
        local_path: Path,
        interval: float = 2.0,
        console: BinaryIO | None = None,
        max_bytes: int = 0,
        max_interval: float = 30.0,
    ):
        self.bucket, self.key, self.path, self.interval = bucket, key, local_path, interval
        self.max_interval = max(interval, max_interval)
        self.max_bytes = max_bytes
        self.written = 0  # bytes in the local log
        self.dropped = 0  # bytes over the cap, not kept
        self.flushed = 0  # bytes already in the bucket object
        self.bytes_uploaded = 0  # bytes sent to the bucket (retried appends count once)
        self._at_line_start = True
        self._closed = False
        self._lock = threading.Lock()  # writes to the local file
        self._flush_lock = threading.Lock()  # one append at a time
        self._file = open(local_path, "wb")  # noqa: SIM115 - closed in close()
        self._console = console if console is not None else sys.stdout.buffer
        self._console_queue: queue.Queue[bytes | None] = queue.Queue(CONSOLE_QUEUE)
        self._console_skipped = 0
        self._console_thread = threading.Thread(target=self._echo, name="log-console", daemon=True)
        self._console_thread.start()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="log-flusher", daemon=True)
        self._thread.start()

    # --- writing ----------------------------------------------------------------------

    def write_bytes(self, data: bytes) -> None:
        """The job's output, exactly as it came."""
        with self._lock:
            if self._closed or not data:
                return
            if self.max_bytes and self.written + len(data) > self.max_bytes:
                keep = max(0, self.max_bytes - self.written)
                self.dropped += len(data) - keep
                data = data[:keep]
                if not data:
                    return
            self._file.write(data)
            self._file.flush()
            self.written += len(data)
            self._at_line_start = data.endswith(b"\n")
        self._to_console(data)

    def info(self, message: str) -> None:
        """An agent line, always on a line of its own (after a newline when the job left none)."""
        with self._lock:
            if self._closed:
                return
            line = ("" if self._at_line_start else "\n") + f"[mlbatch] {message}\n"
            data = line.encode()
            self._file.write(data)
            self._file.flush()
            self.written += len(data)
            self._at_line_start = True
        self._to_console(data)

    def write(self, line: str) -> None:
        self.write_bytes((line if line.endswith("\n") else line + "\n").encode())

    # --- the console ------------------------------------------------------------------

    def _to_console(self, data: bytes) -> None:
        try:
            self._console_queue.put_nowait(data)
        except queue.Full:
            with self._lock:
                self._console_skipped += len(data)

    def _echo(self) -> None:
        while True:
            data = self._console_queue.get()
            if data is None:
                return
            with self._lock:
                skipped, self._console_skipped = self._console_skipped, 0
            try:
                if skipped:
                    self._console.write(f"\n[mlbatch] {skipped} bytes not shown here; the bucket log has them\n".encode())
                self._console.write(data)
                self._console.flush()
            except (OSError, ValueError):  # no console (closed stdout): the bucket log is the record
                pass

    # --- the bucket -------------------------------------------------------------------

    def flush(self) -> None:
        """Append what the bucket object lacks, in chunks of at most APPEND_CHUNK bytes."""
        with self._flush_lock:
            with self._lock:
                size = self.written
            if size == self.flushed:
                return
            with self.path.open("rb") as fh:
                fh.seek(self.flushed)
                while self.flushed < size:
                    chunk = fh.read(min(APPEND_CHUNK, size - self.flushed))
                    self.bucket.append(self.key, chunk, at=self.flushed)
                    self.flushed += len(chunk)
                    self.bytes_uploaded += len(chunk)

    def _loop(self) -> None:
        # Flushes back off from `interval` to `max_interval` while the job runs: the console
        # carries the live output; the bucket copy must survive the instance, not be instant.
        interval = self.interval
        while not self._stop.wait(interval):
            try:
                self.flush()
            except Exception as exc:  # a flaky bucket must not kill the job; the next flush carries on
                self._to_console(f"[mlbatch] log flush failed (retried at the next flush): {exc}\n".encode())
            interval = min(self.max_interval, interval * 1.5)

    def close(self) -> None:
        """Stop, say so when the cap cut the log (its last line), and append the rest."""
        if self.dropped:
            self.info(f"log truncated by policy: kept the first {self.max_bytes} bytes, dropped {self.dropped} bytes")
        with self._lock:
            self._closed = True
        self._stop.set()
        self._thread.join(timeout=30)
        self._console_queue.put(None)
        self._console_thread.join(timeout=30)
        try:
            self.flush()
        finally:
            self._file.close()
