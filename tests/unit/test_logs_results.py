"""The log sink keeps every byte in order; the results upload never leaves its directory (issue 9)."""

from __future__ import annotations

import importlib.util
import io
import os
import random
import threading

from mlbatch.agent.logsink import LogSink
from mlbatch.agent.runner import upload_results
from mlbatch.core.bucket import FileBucket
from tests.conftest import ROOT


def stress_output(mb: int) -> bytes:
    spec = importlib.util.spec_from_file_location("stress_output", ROOT / "batch_code" / "stress_output.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return b"".join(module.output(mb))


def _feed(sink: LogSink, data: bytes, seed: int = 0) -> None:
    rng, i = random.Random(seed), 0  # noqa: S311 - a reproducible split, not a secret
    while i < len(data):
        n = rng.choice([1, 7, 4096, 65536, 300_000])
        sink.write_bytes(data[i : i + n])
        i += n
        if rng.random() < 0.01:
            sink.flush()


def test_every_byte_in_order_tail_included(tmp_path):
    data = stress_output(3)
    bucket = FileBucket(tmp_path / "bucket")
    sink = LogSink(bucket, "runs/j/r/attempts/1/log", tmp_path / "local.log", interval=0.05, console=io.BytesIO())
    sink.info("running")
    _feed(sink, data)
    sink.info("job exited with code 0")
    sink.close()
    log = bucket.read("runs/j/r/attempts/1/log")
    assert log == b"[mlbatch] running\n" + data + b"\n[mlbatch] job exited with code 0\n"


def test_flushes_append_and_never_rewrite(tmp_path):
    bucket = FileBucket(tmp_path / "bucket")
    sink = LogSink(bucket, "k/log", tmp_path / "local.log", interval=3600, console=io.BytesIO())
    sink.write_bytes(b"first\r")
    sink.flush()
    inode = os.stat(tmp_path / "bucket" / "k" / "log").st_ino
    sink.write_bytes(b"\xff second")
    sink.close()
    assert os.stat(tmp_path / "bucket" / "k" / "log").st_ino == inode, "the object was replaced, not appended to"
    assert bucket.read("k/log") == b"first\r\xff second"


def test_a_slow_console_skips_and_says_how_much_but_the_log_keeps_all(tmp_path):
    class Stuck(io.BytesIO):
        """A terminal nobody reads: each write hangs until the test lets it go."""

        def __init__(self):
            super().__init__()
            self.read_again = threading.Event()

        def write(self, data):
            self.read_again.wait()
            return super().write(data)

    console = Stuck()
    bucket = FileBucket(tmp_path / "bucket")
    sink = LogSink(bucket, "k/log", tmp_path / "local.log", interval=3600, console=console)
    writer = threading.Thread(target=lambda: [sink.write_bytes(b"line %d\n" % i) for i in range(3000)])
    writer.start()
    # The job's output goes on while the console hangs. A sink that made it wait for the console
    # would hold the writer here: let the console go then, and the assertions below fail, not hang.
    writer.join(timeout=60)
    console.read_again.set()
    writer.join()
    sink.close()
    assert bucket.read("k/log") == b"".join(b"line %d\n" % i for i in range(3000))
    assert b"bytes not shown here; the bucket log has them" in console.getvalue()


def test_a_size_cap_says_so_in_the_last_line(tmp_path):
    bucket = FileBucket(tmp_path / "bucket")
    sink = LogSink(bucket, "k/log", tmp_path / "local.log", console=io.BytesIO(), max_bytes=10)
    sink.write_bytes(b"0123456789abcdef")
    sink.close()
    log = bucket.read("k/log")
    assert log.startswith(b"0123456789\n")
    assert log.splitlines()[-1] == b"[mlbatch] log truncated by policy: kept the first 10 bytes, dropped 6 bytes"


def test_results_upload_skips_links_and_special_files_and_says_so(tmp_path):
    outside = tmp_path / "instance-secret"
    outside.write_text("TOKEN")
    (tmp_path / "outside-dir").mkdir()
    (tmp_path / "outside-dir" / "key").write_text("KEY")
    results = tmp_path / "results"
    (results / "sub").mkdir(parents=True)
    (results / "model.bin").write_bytes(b"\0" * 1000)
    (results / "sub" / "metrics.json").write_text("{}")
    (results / "escape").symlink_to(outside)
    (results / "inside-link").symlink_to("model.bin")
    (results / "linked-dir").symlink_to(tmp_path / "outside-dir", target_is_directory=True)
    os.mkfifo(results / "a-fifo")
    (results / os.fsdecode(b"bad-\xff-name")).write_text("x")
    (results / "new\nline").write_text("x")
    bucket = FileBucket(tmp_path / "bucket")
    lines: list[str] = []
    assert upload_results(bucket, results, "runs/j/r/results", lines.append) == 2
    assert sorted(bucket.list("runs")) == ["runs/j/r/results/model.bin", "runs/j/r/results/sub/metrics.json"]
    for name in ("escape", "inside-link", "linked-dir", "a-fifo"):
        assert any(line.startswith(f"skipped {name}:") for line in lines), lines
    assert sum("not printable UTF-8" in line for line in lines) == 2
    stored = b"".join(bucket.read(k) for k in bucket.list("runs"))
    assert b"TOKEN" not in stored and b"KEY" not in stored


def test_results_are_streamed_not_read_whole(tmp_path, monkeypatch):
    big = tmp_path / "results" / "big.bin"
    big.parent.mkdir()
    with big.open("wb") as fh:
        fh.truncate(64 * 1024 * 1024)  # sparse: 64 MB of zeros
    monkeypatch.setattr("pathlib.Path.read_bytes", lambda self: (_ for _ in ()).throw(AssertionError("read whole")))
    bucket = FileBucket(tmp_path / "bucket")
    upload_results(bucket, big.parent, "r", lambda _: None)
    assert (tmp_path / "bucket" / "r" / "big.bin").stat().st_size == 64 * 1024 * 1024


def test_the_catalog_caps_a_jobs_log():
    import pytest

    from mlbatch.core.catalog import parse_catalog
    from mlbatch.core.errors import BadInput

    base = "jobs:\n  j:\n    container: trainer\n    command: [python, j.py]\n"
    assert parse_catalog(base + "    max_log_mb: 5\n")["j"].max_log_mb == 5
    assert parse_catalog(base)["j"].max_log_mb == 0
    with pytest.raises(BadInput, match="max_log_mb"):
        parse_catalog(base + "    max_log_mb: lots\n")
