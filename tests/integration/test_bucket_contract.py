"""One contract, both bucket kinds: file:// and gs:// (fake-gcs-server)."""

import pytest

from mlbatch.core.bucket import open_bucket
from mlbatch.core.errors import AlreadyExists, BadInput, NotFound


def test_write_read_list(any_bucket):
    bucket = open_bucket(any_bucket)
    bucket.write("runs/j/r1/spec.json", b"{}")
    bucket.write("runs/j/r1/attempts/1/log", b"line\n")
    bucket.write("runs/j/r1/attempts/1/log", b"line\nline2\n")  # logs are rewritten while they grow
    assert bucket.read("runs/j/r1/attempts/1/log") == b"line\nline2\n"
    assert sorted(bucket.list("runs/j")) == ["runs/j/r1/attempts/1/log", "runs/j/r1/spec.json"]
    assert list(bucket.list("nothing-here")) == []


def test_immutable_objects_cannot_be_overwritten(any_bucket):
    bucket = open_bucket(any_bucket)
    bucket.write("releases/v1.0.0/manifest.json", b"first", immutable=True)
    with pytest.raises(AlreadyExists, match="immutable"):
        bucket.write("releases/v1.0.0/manifest.json", b"second", immutable=True)
    assert bucket.read("releases/v1.0.0/manifest.json") == b"first"


def test_missing_objects(any_bucket):
    bucket = open_bucket(any_bucket)
    assert not bucket.exists("nope")
    with pytest.raises(NotFound):
        bucket.read("nope")


@pytest.mark.parametrize("key", ["../escape", "/abs", "a//b", ""])
def test_bad_keys(any_bucket, key):
    with pytest.raises(BadInput):
        open_bucket(any_bucket).write(key, b"x")


def test_append_read_ranges_and_size(any_bucket):
    from mlbatch.core.errors import MlbatchError

    bucket = open_bucket(any_bucket)
    key = "runs/j/r1/attempts/1/log"
    bucket.append(key, b"abc\r", at=0)
    bucket.append(key, b"\xffdef", at=4)
    assert bucket.read(key) == b"abc\r\xffdef" and bucket.size(key) == 8
    assert bucket.read(key, start=3) == b"\r\xffdef" and bucket.read(key, start=1, end=3) == b"bc"
    assert bucket.read(key, start=8) == b""
    with pytest.raises(MlbatchError, match="expected 4"):
        bucket.append(key, b"again", at=4)  # a stale appender never writes over or duplicates
    assert list(bucket.list("runs/j/r1")) == [key], "no part object is left or listed"
