"""The attempt's log: printed to the instance console and flushed to the bucket while it runs."""

from __future__ import annotations

import threading
from pathlib import Path

from mlbatch.core.bucket import Bucket


class LogSink:
    """Lines go to stdout (docker logs / serial console) at once and to the bucket every
    `interval` seconds, so the log survives the instance whatever ends it."""

    def __init__(self, bucket: Bucket, key: str, local_path: Path, interval: float = 2.0):
        self.bucket, self.key, self.path, self.interval = bucket, key, local_path, interval
        self._lock = threading.Lock()
        self._file = open(local_path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._flushed_size = -1
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
        with self._lock:
            size = self.path.stat().st_size
            if size == self._flushed_size:
                return
            data = self.path.read_bytes()
        self.bucket.write(self.key, data)
        self._flushed_size = len(data)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.flush()
            except Exception as exc:  # a flaky bucket must not kill the job; the final flush retries
                print(f"[mlbatch] log flush failed: {exc}", flush=True)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.flush()
        self._file.close()
