"""The typed run records: round trips, old records without schema_version, bad records."""

from __future__ import annotations

import json

import pytest

from mlbatch.core import runs
from mlbatch.core.bucket import FileBucket
from mlbatch.core.errors import BadRecord, ExitCode

SPEC = runs.RunSpec(
    run_id="sleep-20261125-200000-abcd",
    job="sleep",
    version="v1.0.0",
    bucket="file:///tmp/bucket",
    container="127.0.0.1:5000/trainer@sha256:" + "a" * 64,
    code_key="batch_code/v1.0.0/code.tar.gz",
    code_sha256="b" * 64,
    argv=("python", "sleep.py", "--seconds=1"),
    params={"seconds": 1},
    timeout_seconds=60,
    created="2026-11-25T20:00:00.000+00:00",
    vm_image="mlbatch-v1-0-0:latest",
)
ATTEMPT = runs.AttemptRecord(
    run_id=SPEC.run_id,
    job="sleep",
    version="v1.0.0",
    attempt=2,
    instance="mlb-sleep-20261125-200000-abcd-2",
    status=runs.FAILED,
    exit_code=3,
    message="",
    started="2026-11-25T20:00:01.000+00:00",
    finished="2026-11-25T20:00:09.000+00:00",
    phases={"pull": 0.5, "run": 2.0},
    provenance=runs.Provenance.of(SPEC, agent="0.1.0"),
    results="file:///tmp/bucket/runs/sleep/x/results",
)


@pytest.mark.parametrize(
    "record",
    [
        SPEC,
        ATTEMPT,
        runs.ResultRecord.of_attempt(ATTEMPT),
        runs.IdempotencyRecord(run_id=SPEC.run_id, created=SPEC.created),
        runs.InstanceSpec(spec=SPEC, attempt=1, instance="mlb-x-1", workdir="/w"),
    ],
    ids=lambda r: type(r).__name__,
)
def test_every_record_round_trips_and_carries_its_schema_version(record):
    data = json.loads(record.to_json())
    assert data["schema_version"] == runs.SCHEMA_VERSION
    assert type(record).from_dict(data) == record


def test_a_record_written_before_schema_versions_reads_as_version_1():
    old_spec = {k: v for k, v in json.loads(SPEC.to_json()).items() if k != "schema_version"}
    old_spec["profile"] = "local"  # the field old controllers wrote and nothing read
    assert runs.RunSpec.from_dict(old_spec) == SPEC
    old_result = {
        k: v for k, v in runs.ResultRecord.of_attempt(ATTEMPT).to_dict().items() if k not in ("schema_version", "recorded_by")
    }
    result = runs.ResultRecord.from_dict(old_result)
    assert result.schema_version == 1 and result.recorded_by == runs.AGENT and result.provenance == ATTEMPT.provenance


def test_the_agent_ends_the_run_with_its_attempt_record():
    result = runs.ResultRecord.of_attempt(ATTEMPT)
    assert (result.status, result.exit_code, result.attempt, result.recorded_by) == (runs.FAILED, 3, 2, runs.AGENT)
    assert result.run_exit_code == 3


@pytest.mark.parametrize(
    ("status", "exit_code", "expected"),
    [
        (runs.SUCCEEDED, 0, 0),
        (runs.FAILED, 7, 7),
        (runs.PREEMPTED, -1, ExitCode.PREEMPTED),
        (runs.QUOTA_EXCEEDED, -1, ExitCode.QUOTA_EXCEEDED),
        ("something-new", -1, ExitCode.INFRA_FAILED),
    ],
)
def test_the_run_exit_code_follows_the_status(status, exit_code, expected):
    record = runs.ResultRecord(
        run_id="r", job="j", version="v1.0.0", attempt=1, status=status, exit_code=exit_code, message="", finished="", results=""
    )
    assert record.run_exit_code == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "is not JSON"),
        ("[1, 2]", "is not a JSON object"),
        ('{"created": "x"}', "lacks run_id"),
        ('{"run_id": "r", "created": "x", "schema_version": 99}', "schema_version 99.*upgrade mlbatch"),
    ],
)
def test_a_bad_record_is_a_clear_error(tmp_path, text, message):
    bucket = FileBucket(tmp_path)
    bucket.write("idempotency/sleep/k.json", text.encode())
    with pytest.raises(BadRecord, match=message) as info:
        runs.read_record(bucket, "idempotency/sleep/k.json", runs.IdempotencyRecord)
    assert "idempotency/sleep/k.json" in str(info.value) and info.value.exit_code == ExitCode.INFRA_FAILED


def test_a_missing_record_is_none(tmp_path):
    assert runs.read_result(FileBucket(tmp_path), SPEC.run_id) is None


def test_phases_are_timed_by_their_known_names_only():
    phases: dict[str, float] = {}
    with runs.timed(phases, "pull"):
        pass
    with pytest.raises(ValueError, match="unknown phase 'download'"), runs.timed(phases, "download"):
        pass
    assert list(phases) == ["pull"]
