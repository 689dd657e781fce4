"""`run-batch --dry-run` on the test profile (the gcp code path): the plan holds the
instances.insert body the gce provider would send, or a sweep's Cloud Batch job body, both
built by the providers' own code, with no API called (the endpoints point nowhere) and
nothing written to the bucket. Through `invoke` on the local profile:
tests/integration/test_cli_commands.py."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from mlbatch.core.bucket import FileBucket
from mlbatch.core.errors import BadInput
from mlbatch.core.settings import load_settings
from mlbatch.run.commands import RunOptions
from mlbatch.run.deadlines import Margins
from mlbatch.run.plan import plan_run, render_plan
from tests.conftest import ROOT, repo_config
from tests.support.releases import publish_release

NOWHERE = "http://127.0.0.1:9"  # nothing listens: a call would fail the test


@pytest.fixture
def settings(tmp_path):
    config = repo_config()
    config["profile"] = "test"
    config["profiles"]["test"].update(bucket="gs://unused-bucket", compute_endpoint=NOWHERE, batch_endpoint=NOWHERE)
    publish_release(FileBucket(tmp_path / "bucket"))
    return dataclasses.replace(load_settings(config, ROOT, env={}), bucket=f"file://{tmp_path / 'bucket'}")


def files(settings) -> set[str]:
    return {str(p) for p in Path(settings.bucket.removeprefix("file://")).rglob("*")}


def test_a_run_plan_holds_the_instances_insert_body(settings):
    before = files(settings)
    plan = plan_run(settings, RunOptions("sleep", "latest", ("seconds=5",), timeout_seconds=120).request())
    assert (plan["release"], plan["params"], plan["argv"]) == ("v1.0.0", {"seconds": 5}, ["python", "sleep.py", "--seconds=5"])
    body = plan["instance"]["body"]["instances_insert"]
    assert plan["instance"]["body"]["zone"] == "europe-west4-a"
    assert body["name"] == f"mlb-{plan['run_id_example']}-1" and body["scheduling"]["provisioning_model"] == "SPOT"
    assert body["scheduling"]["max_run_duration"]["seconds"] == str(Margins().instance_seconds(120)), "as a real run's"
    spec = next(item["value"] for item in body["metadata"]["items"] if item["key"] == "mlbatch-run-spec")
    assert json.loads(spec)["argv"] == ["python", "sleep.py", "--seconds=5"]
    assert "DRY RUN" in render_plan(plan) and files(settings) == before


def test_a_sweep_plan_holds_the_batch_job_body(settings):
    plan = plan_run(settings, RunOptions("sleep", "v1.0.0", sweeps=("seconds=1,2,3",), parallelism=2).request())
    group = plan["batch_job"]["body"]["task_groups"][0]
    assert (group["task_count"], group["parallelism"]) == ("3", "2")
    assert [t["argv"] for t in plan["tasks"]] == [["python", "sleep.py", f"--seconds={n}"] for n in (1, 2, 3)]
    assert plan["batch_job"]["name"] == f"mlb-{plan['run_id_example']}"


def test_a_plan_is_refused_as_the_run_would_be(settings):
    with pytest.raises(BadInput, match="unknown param 'size'"):
        plan_run(settings, RunOptions("sleep", "v1.0.0", ("size=3",)).request())
    with pytest.raises(BadInput, match="--parallelism applies to sweeps"):
        RunOptions("sleep", "v1.0.0", parallelism=2).request()
