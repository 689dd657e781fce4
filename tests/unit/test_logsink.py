"""The attempt log reaches the bucket with bytes that grow linearly with the log."""

from mlbatch.agent.logsink import LogSink
from mlbatch.core.bucket import open_bucket


def test_log_flushes_upload_each_byte_once(any_bucket, tmp_path):
    bucket = open_bucket(any_bucket)
    sink = LogSink(bucket, "runs/j/r/attempts/1/log", tmp_path / "attempt.log", interval=3600)
    expected = b""
    for i in range(20):
        sink.write(f"line {i} " + "x" * 100)
        expected += f"line {i} {'x' * 100}\n".encode()
        sink.flush()
    sink.close()
    assert bucket.read("runs/j/r/attempts/1/log") == expected
    assert sink.bytes_uploaded == len(expected), "each flush uploads only what is new"
