"""`invoke bench.logs`: what keeping a job's log in the bucket costs over writing it to a file.

Baseline: the same bytes, in the same chunks, written to a plain local file (what a job's
`> out.log` costs). Candidate: the agent's LogSink (local file, console queue, an append
to the bucket object every 2 s, the last append at close). For comparison, the way logs
were kept before issue 9: the whole object rewritten at every flush. The output is awkward
on purpose (\\r progress bars, 1 MB lines, bytes that are not UTF-8), in 64 KiB chunks as
the engine hands them over.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlbatch.agent.logsink import LogSink
from mlbatch.core.bucket import Bucket, open_bucket

CHUNK = 64 * 1024


def awkward_output(mb: int) -> Iterator[bytes]:
    block = b"".join(b"line %d: " % i + b"x" * (i % 200) + b"\n" for i in range(500))
    block += b"".join(b"\rprogress %3d%% |" % p + b"#" * (p // 4) for p in range(0, 101, 5)) + b"\n\xff\xfe\x80 not utf-8\n"
    long_line = b"L" * (1024 * 1024) + b"\n"
    data = (block * 20 + long_line) * (mb * 1024 * 1024 // (len(block) * 20 + len(long_line)) + 1)
    data = data[: mb * 1024 * 1024]
    for i in range(0, len(data), CHUNK):
        yield data[i : i + CHUNK]


class _Counting:
    """The bucket, counting the bytes sent to it."""

    def __init__(self, bucket: Bucket):
        self.bucket, self.sent = bucket, 0

    def append(self, key: str, data: bytes, *, at: int) -> None:
        self.sent += len(data)
        self.bucket.append(key, data, at=at)

    def write(self, key: str, data: bytes, *, immutable: bool = False) -> None:
        self.sent += len(data)
        self.bucket.write(key, data, immutable=immutable)


def _feed(chunks: list[bytes], write, seconds: float) -> None:
    """Write the chunks, spread evenly over `seconds` (0: as fast as possible)."""
    start = time.monotonic()
    for n, chunk in enumerate(chunks):
        write(chunk)
        if seconds:
            time.sleep(max(0.0, start + seconds * (n + 1) / len(chunks) - time.monotonic()))


def _plain_file(chunks: list[bytes], folder: Path, seconds: float = 0) -> tuple[float, float]:
    """(wall, CPU) seconds of writing the chunks to a file."""
    start, cpu = time.monotonic(), time.process_time()
    with (folder / "plain.log").open("wb") as fh:

        def write(chunk: bytes) -> None:
            fh.write(chunk)
            fh.flush()

        _feed(chunks, write, seconds)
    return time.monotonic() - start, time.process_time() - cpu


def _log_sink(chunks: list[bytes], folder: Path, bucket: Any, key: str, seconds: float = 0) -> tuple[float, float]:
    with open(os.devnull, "wb") as devnull:
        start, cpu = time.monotonic(), time.process_time()
        sink = LogSink(bucket, key, folder / "sink.log", interval=2.0, console=devnull)
        _feed(chunks, sink.write_bytes, seconds)
        sink.close()
        return time.monotonic() - start, time.process_time() - cpu


def _rewrite_whole(chunks: list[bytes], folder: Path, bucket: Any, key: str, seconds: float = 0) -> tuple[float, float]:
    """The old sink: every 2 s, the whole local log written to the bucket object again."""
    path = folder / "rewrite.log"
    stop = threading.Event()

    def flusher() -> None:
        while not stop.wait(2.0):
            bucket.write(key, path.read_bytes())

    start, cpu = time.monotonic(), time.process_time()
    with path.open("wb") as fh:
        thread = threading.Thread(target=flusher, daemon=True)
        thread.start()

        def write(chunk: bytes) -> None:
            fh.write(chunk)
            fh.flush()

        _feed(chunks, write, seconds)
    stop.set()
    thread.join()
    bucket.write(key, path.read_bytes())
    return time.monotonic() - start, time.process_time() - cpu


def bench_logs(bucket_uri: str | None, mb: int, repeat: int, seconds: float, say) -> list[tuple[str, str]]:
    chunks = list(awkward_output(mb))
    total = sum(len(c) for c in chunks)
    times: dict[str, list[float]] = {"plain": [], "sink": [], "rewrite": []}
    with tempfile.TemporaryDirectory(prefix="bench-logs-") as tmp:
        folder = Path(tmp)
        bucket = open_bucket(bucket_uri or f"file://{folder / 'bucket'}")
        for i in range(repeat):
            key = f"bench/logs/{os.getpid()}-{i}"
            times["plain"].append(_plain_file(chunks, folder)[0])
            times["sink"].append(_log_sink(chunks, folder, bucket, f"{key}/sink")[0])
            if bucket.read(f"{key}/sink") != b"".join(chunks):
                raise RuntimeError("the bucket log differs from what was written")
            times["rewrite"].append(_rewrite_whole(chunks, folder, bucket, f"{key}/rewrite")[0])
            last = ", ".join(f"{name} {values[-1]:.2f}s" for name, values in times.items())
            say(f"round {i + 1}/{repeat}: {last}")
        say(f"paced round: the same output spread over {seconds:.0f}s, as a job writes it")
        sent = {"sink": _Counting(bucket), "rewrite": _Counting(bucket)}
        paced = {
            "plain": _plain_file(chunks, folder, seconds),
            "sink": _log_sink(chunks, folder, sent["sink"], "bench/logs/paced-sink", seconds),
            "rewrite": _rewrite_whole(chunks, folder, sent["rewrite"], "bench/logs/paced-rewrite", seconds),
        }
    best = {name: min(values) for name, values in times.items()}

    def rate(name: str) -> str:
        return f"{total / best[name] / 1e6:.0f} MB/s, {best[name] / best['plain']:.2f}x the file's time"

    def over_pace(name: str) -> str:
        wall, cpu = paced[name]
        out = f"CPU {cpu:.2f}s, done {wall - seconds:.2f}s after the last write"
        return out + (f", {sent[name].sent / total:.1f}x the output sent to the bucket" if name in sent else "")

    return [
        ("output", f"{total / 1e6:.0f} MB in {len(chunks)} chunks of 64 KiB, bucket {bucket_uri or 'file:// (temp)'}"),
        ("as fast as possible", f"best of {repeat}"),
        ("  plain file (baseline)", rate("plain")),
        ("  LogSink, appends (now)", rate("sink")),
        ("  whole-object rewrite every 2 s (before)", rate("rewrite")),
        (f"spread over {seconds:.0f}s", ""),
        ("  plain file (baseline)", over_pace("plain")),
        ("  LogSink, appends (now)", over_pace("sink")),
        ("  whole-object rewrite every 2 s (before)", over_pace("rewrite")),
    ]
