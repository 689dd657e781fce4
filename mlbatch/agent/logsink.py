"""The attempt's log: printed to the instance console and flushed to the bucket while it runs."""

from __future__ import annotations

import threading
from pathlib import Path

from mlbatch.core.bucket import Bucket


class LogSink:
    """Lines go to stdout (docker logs / serial console) at once and to the bucket every
    `interval` (backing off to `max_interval`) seconds, so the log survives the instance
    whatever ends it. Each flush appends only the new bytes (Bucket.append)."""

    def __init__(self, bucket: Bucket, key: str, local_path: Path, interval: float = 2.0, max_interval: float = 30.0):
        self.bucket, self.key, self.path, self.interval, self.max_interval = bucket, key, local_path, interval, max_interval
        self._lock = threading.Lock()
        self._file = open(local_path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._flushed_size = local_path.stat().st_size if local_path.exists() else 0
        self.bytes_uploaded = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="log-flusher", daemon=True)
        self._thread.start()

    def write(self, line: str) -> None:
        line = line.rstrip("\n")
        with self._lock:
            print(line, flush=True)
            self._file.write(line + "\n")
            self._file.flush()

    def info(self, message: str) -> None:
        self.write(f"[mlbatch] {message}")

    def flush(self) -> None:
        """Append what was written since the last flush: bytes uploaded grow linearly with the log."""
        with self._lock:
            size = self.path.stat().st_size
            if size == self._flushed_size:
                return
            with open(self.path, "rb") as fh:
                fh.seek(self._flushed_size)
                data = fh.read(size - self._flushed_size)
        self.bucket.append(self.key, data)
        self._flushed_size += len(data)
        self.bytes_uploaded += len(data)

    def _loop(self) -> None:
        # Flushes back off from `interval` to `max_interval` while the job runs: the console
        # carries the live output; the bucket copy must survive the instance, not be instant.
        interval = self.interval
        while not self._stop.wait(interval):
            try:
                self.flush()
            except Exception as exc:  # a flaky bucket must not kill the job; the final flush retries
                print(f"[mlbatch] log flush failed: {exc}", flush=True)
            interval = min(self.max_interval, interval * 1.5)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.flush()
        self._file.close()
