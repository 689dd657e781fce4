"""A bucket that answers 503/429 or drops connections, for real (FaultProxy in front of
fake-gcs-server): log flushes, result uploads and record writes retry with the right
preconditions, and every object ends up exactly once with exactly its bytes."""

from __future__ import annotations

import io
import json

import pytest

from mlbatch.agent.logsink import LogSink
from mlbatch.agent.runner import upload_results
from mlbatch.core import manifest as manifests
from mlbatch.core import runs
from mlbatch.core.bucket import PART_MARK, open_bucket
from mlbatch.core.errors import AlreadyExists
from tests.unit.test_bundle_manifest import _manifest
from tests.unit.test_logs_results import stress_output

pytestmark = pytest.mark.chaos


def _survived(tally, proxy) -> None:
    tally["faults_injected"] += proxy.injected
    tally["faults_survived"] += proxy.injected


def _leftover_parts(proxy, bucket) -> list[str]:
    return [name for kind, name in proxy.requests if PART_MARK in name and kind == "upload"] and [
        key for key in bucket._client.list_blobs(bucket._bucket) if PART_MARK in key.name
    ]


LOG_FAULTS = [
    ("upload", "503", 2),
    ("upload", "drop-after", 1),  # a part (or the first chunk) stored, its answer lost
    ("compose", "drop-after", 2),  # the chunk composed in, the answer lost: must not go in twice
    ("compose", "429", 1),
    ("metadata", "drop-before", 1),
    ("delete", "503", 1),
]


def test_log_flushes_through_faults_lose_and_repeat_nothing(faulty_gcs, tally, tmp_path):
    proxy, uri = faulty_gcs
    bucket = open_bucket(uri)
    for kind, action, times in LOG_FAULTS:
        proxy.inject(kind, action, times, name_contains="attempts/1/log")
    data = stress_output(3)
    key = "runs/j/j-20260101-000000-abcd/attempts/1/log"
    sink = LogSink(bucket, key, tmp_path / "log", interval=3600, console=io.BytesIO())
    for i in range(0, len(data), 200_000):  # one flush per 200 kB: many appends, each can be hit
        sink.write_bytes(data[i : i + 200_000])
        sink.flush()
    sink.close()
    stored = bucket.read(key)
    if stored != data:
        tally["log_bytes_lost"] += abs(len(data) - len(stored)) or 1
    assert stored == data, f"stored {len(stored)} bytes, wrote {len(data)}"
    assert proxy.injected == sum(times for _, _, times in LOG_FAULTS), (proxy.faults, sorted(set(proxy.requests))[:20])
    parts = _leftover_parts(proxy, bucket)
    tally["files_leaked"] += len(parts)
    assert not parts
    _survived(tally, proxy)


def test_records_are_written_once_even_when_the_answer_is_lost(faulty_gcs, tally):
    proxy, uri = faulty_gcs
    bucket = open_bucket(uri)
    proxy.inject("upload", "drop-after", 1, name_contains="result.json")
    proxy.inject("upload", "503", 2, name_contains="attempt.json")
    proxy.inject("upload", "drop-after", 1, name_contains="manifest.json")
    run_id = "j-20260101-000000-abcd"
    record = {"status": "succeeded", "exit_code": 0}
    runs.write_json(bucket, runs.attempt_key(run_id, 1, "attempt.json"), record)
    runs.write_json(bucket, runs.result_key(run_id), record, immutable=True)  # stored, answer lost, retried: ours
    with pytest.raises(AlreadyExists):  # a second writer with other bytes still loses
        runs.write_json(bucket, runs.result_key(run_id), {**record, "status": "cancelled"}, immutable=True)
    manifests.publish(bucket, _manifest())
    assert manifests.load(bucket, "v1.0.0") == _manifest()
    assert runs.read_json(bucket, runs.result_key(run_id)) == record
    assert json.loads(bucket.read(runs.attempt_key(run_id, 1, "attempt.json"))) == record
    assert proxy.injected == 4
    _survived(tally, proxy)


def test_result_uploads_stream_through_faults(faulty_gcs, tally, tmp_path):
    proxy, uri = faulty_gcs
    bucket = open_bucket(uri)
    results = tmp_path / "results"
    results.mkdir()
    big = bytes(range(256)) * (20 * 4096)  # 20 MB: a resumable upload in 8 MB chunks
    (results / "model.bin").write_bytes(big)
    (results / "metrics.json").write_text('{"accuracy": 0.9}')
    proxy.inject("upload", "503", 2, name_contains="model.bin")
    proxy.inject("upload", "drop-after", 1, name_contains="metrics.json")
    proxy.inject("upload", "429", 1)
    lines: list[str] = []
    assert upload_results(bucket, results, "runs/j/r/results", lines.append) == 2
    assert bucket.read("runs/j/r/results/model.bin") == big
    assert bucket.read("runs/j/r/results/metrics.json") == b'{"accuracy": 0.9}'
    assert proxy.injected == 4
    _survived(tally, proxy)
