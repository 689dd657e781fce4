"""mlbatch.providers.batch.BatchJobs against the fake Cloud Batch API (its jobs wait on a quota
fault: nothing runs): the job's life through the client, retries, refusals."""

from __future__ import annotations

import pytest

from mlbatch.core.errors import ExitCode, PermissionDenied
from tests.support.tests.test_fake_batch import body, fake, jobs  # noqa: F401 - the fixtures


def test_a_job_is_created_listed_read_and_deleted(jobs, fake):  # noqa: F811 - fixtures
    jobs.create("mlb-a", body(jobs, fake))
    view = jobs.get("mlb-a")
    assert view is not None and view.labels["managed-by"] == "mlbatch" and view.counts == {"PENDING": 2}
    assert [j.name for j in jobs.list_ours()] == ["mlb-a"]
    assert [t.state for t in jobs.tasks("mlb-a")] == ["PENDING", "PENDING"]
    jobs.delete("mlb-a", "test")
    assert jobs.get("mlb-a").state == "DELETION_IN_PROGRESS"


def test_a_create_whose_response_is_lost_is_retried_and_makes_one_job(jobs, fake):  # noqa: F811 - fixtures
    fake.faults.lose_create_responses = 1
    jobs.create("mlb-c", body(jobs, fake))  # retried after the lost response: the request id makes it one job
    assert fake.creates_performed == 1 and jobs.get("mlb-c") is not None


def test_permission_denied_is_not_retried_and_names_the_batch_role(jobs, fake):  # noqa: F811 - fixtures
    fake.faults.forbidden = True
    before = len(fake.requests)
    with pytest.raises(PermissionDenied, match="roles/batch.jobsEditor") as caught:
        jobs.create("mlb-f", body(jobs, fake))
    assert caught.value.exit_code == ExitCode.PERMISSION_DENIED and "batch.jobs.create" in str(caught.value)
    assert len(fake.requests) == before + 1, "a 403 is not retried"
