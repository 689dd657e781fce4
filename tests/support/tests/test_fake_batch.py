"""The fake Cloud Batch API is as strict as the real one (batch.v1 discovery document, plus what
the service refuses beyond types), without running any task: its jobs wait on a quota fault.
The fake's own tests; the Batch client against it is tests/unit/test_batch_jobs.py."""

from __future__ import annotations

import json
import time

import pytest
from google.api_core import exceptions as gexc
from google.cloud import batch_v1

from mlbatch.core import runs
from mlbatch.core.catalog import parse_catalog
from mlbatch.core.settings import load_settings
from mlbatch.providers.batch import BatchJobs
from tests.conftest import ROOT, repo_config
from tests.support.fake_batch import FakeBatch
from tests.support.fake_compute import FakeCompute

JOB = parse_catalog((ROOT / "batch_code" / "jobs.yaml").read_text())["sleep"]


@pytest.fixture
def fake():
    fake = FakeBatch("mlbatch-test").start()
    fake.faults.quota_exceeded = True  # jobs are accepted and wait: nothing runs
    yield fake
    fake.stop()


@pytest.fixture
def jobs(fake):
    config = repo_config()
    config["profile"] = "test"
    config["profiles"]["test"].update(bucket="gs://b-unit", batch_endpoint=fake.endpoint)
    jobs = BatchJobs(load_settings(config, ROOT))
    jobs.api_deadline = 5.0
    return jobs


def body(jobs, fake, tasks=2, **labels):
    link = fake.add_image("mlbatch-v1-0-0-1", "unused:latest")
    spec = runs.RunSpec(
        run_id="sleep-20260101-000000-abcd", job="sleep", version="v1.0.0", bucket="gs://b-unit", container="r@sha256:1",
        code_key="k", code_sha256="s", argv=("python", "sleep.py"), params={}, timeout_seconds=60, created="now",
        vm_image=link,
    )  # fmt: skip
    params = [JOB.resolve_params({"seconds": str(i)}) for i in range(tasks)]
    return jobs.job_body(spec, JOB, params, 2, {"managed-by": "mlbatch", "run-id": spec.run_id, **labels}, 900)


def raw_create(fake, job_id, payload, request_id=""):
    import urllib.error
    import urllib.request

    url = f"{fake.endpoint}/v1/projects/mlbatch-test/locations/europe-west4/jobs?jobId={job_id}"
    request = urllib.request.Request(url + (f"&requestId={request_id}" if request_id else ""), json.dumps(payload).encode())
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _task_spec(payload):
    return payload["taskGroups"][0]["taskSpec"]


def _boot_disk(payload):
    return payload["allocationPolicy"]["instances"][0]["policy"]["bootDisk"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: b.update(colour="red"), 'Unknown name "colour"'),
        (lambda b: b["taskGroups"][0].update(taskEnvironments=[]), "taskEnvironments has 0 entries"),
        (lambda b: b["logsPolicy"].update(destination="SOMEWHERE"), "expected one of"),
        (lambda b: b["taskGroups"][0]["taskSpec"].update(maxRunDuration="1h"), "max_run_duration"),
        (lambda b: b.update(labels={"Bad": "x"}), "Invalid label"),
        (lambda b: _boot_disk(b).update(image="projects/p/global/images/x"), "not found"),
        (lambda b: _task_spec(b).update(maxRetryCount=11), "max_retry_count"),
        (
            lambda b: _task_spec(b)["lifecyclePolicies"].append({"action": "FAIL_TASK", "actionCondition": {"exitCodes": [3]}}),
            "only one is supported",
        ),
    ],
)
def test_what_the_service_refuses(jobs, fake, change, message):
    payload = json.loads(batch_v1.Job.to_json(body(jobs, fake), use_integers_for_enums=False))
    change(payload)
    status, reply = raw_create(fake, "mlb-bad", payload)
    assert status == 400 and message in reply["error"]["message"]


def test_request_ids_deduplicate(jobs, fake):
    payload = json.loads(batch_v1.Job.to_json(body(jobs, fake), use_integers_for_enums=False))
    assert raw_create(fake, "mlb-b", payload, "req-1")[0] == 200
    assert raw_create(fake, "mlb-b", payload, "req-1")[0] == 200, "the same request id is the same create"
    assert raw_create(fake, "mlb-b", payload, "req-2")[0] == 409


def test_a_quota_error_shows_in_the_jobs_status_events(jobs, fake):
    jobs.create("mlb-q", body(jobs, fake))
    deadline = time.monotonic() + 10
    while not any("CODE_GCE_QUOTA_EXCEEDED" in e for e in jobs.get("mlb-q").events) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert jobs.get("mlb-q").state == "SCHEDULED"


def test_the_fake_compute_api_still_validates_through_the_shared_routing():
    from google.cloud import compute_v1

    fake = FakeCompute("mlbatch-test").start()
    try:
        fake.add_image("img", "unused:latest")
        status, reply = fake._dispatch("GET", "/compute/v1/projects/mlbatch-test/global/images/img", {"colour": "red"}, None)
        assert status == 400 and "'colour' is not a parameter of compute.images.get" in reply["error"]["message"]
        client = compute_v1.ImagesClient(
            transport="rest",
            client_options={"api_endpoint": fake.endpoint},
            credentials=__import__("google.auth.credentials").auth.credentials.AnonymousCredentials(),
        )
        assert client.get(project="mlbatch-test", image="img").name == "img"
        with pytest.raises(gexc.NotFound):
            client.get(project="other-project", image="img")
    finally:
        fake.stop()


@pytest.mark.parametrize(
    ("policy", "code", "expected"),
    [
        (None, 3, "RETRY_TASK"),  # no policy: the default retries any non-zero code
        ({"action": "RETRY_TASK", "actionCondition": {"exitCodes": [50001]}}, 50001, "RETRY_TASK"),
        ({"action": "RETRY_TASK", "actionCondition": {"exitCodes": [50001]}}, 3, "FAIL_TASK"),
        ({"action": 2, "actionCondition": {"exitCodes": [3]}}, 3, "FAIL_TASK"),  # FAIL_TASK, enum-encoding=int
        ({"action": "FAIL_TASK", "actionCondition": {"exitCodes": [3]}}, 50001, "RETRY_TASK"),
    ],
)
def test_the_lifecycle_policy_acts_as_the_api_documents_it(policy, code, expected):
    """LifecyclePolicy.action (batch.v1): RETRY_TASK retries on a listed code and fails on any other;
    FAIL_TASK the reverse; without a policy, a non-zero code is retried while retries are left."""
    from tests.support.fake_batch.backing import action

    assert action({"lifecyclePolicies": [policy] if policy else []}, code) == expected
