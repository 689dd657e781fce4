"""Detached runs on the test profile: the gce provider against the fake Compute API, whose
instances run the real agent (which deletes its own VM) and can be preempted."""

from __future__ import annotations

import pytest

from mlbatch.core import runs
from mlbatch.core.bucket import open_bucket
from mlbatch.core.errors import ExitCode
from mlbatch.providers.gce import GceProvider
from mlbatch.run import detach
from mlbatch.run.controller import Controller, RunRequest
from tests.integration.test_gce_fake import fake, wait_for, world  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.usefixtures("infra")]


def controller(world):  # noqa: F811
    settings, _, _ = world
    provider = GceProvider(settings)
    provider.serial_poll = 0.2
    return Controller(open_bucket(settings.bucket), provider, lambda line: None, lambda line: None)


def vms_of(fake, run_id):  # noqa: F811  (the fixture's name, here a parameter)
    return [name for _, name in list(fake.instances) if run_id in name]


def log_of(bucket, run_id):
    key = runs.attempt_key(run_id, 1, runs.ATTEMPT_LOG)
    return bucket.read(key).decode(errors="replace") if bucket.exists(key) else ""


def test_a_preempted_detached_run_is_retried_by_runs_wait(world, fake):  # noqa: F811
    fake.faults.preempt_attempts = {1: 4.0}
    control = controller(world)
    run_id = detach.start(control, RunRequest("sleep", world[1], params=("seconds=8",)))
    assert vms_of(fake, run_id) == [f"mlb-{run_id}-1"], "returned once the VM exists"
    bucket = open_bucket(world[0].bucket)

    def preempted():  # the platform took VM 1 away (its agent may or may not have had time to record it)
        ops = [op for op in list(fake.operations.values()) if op["operationType"] == "compute.instances.preempted"]
        return any(op["targetLink"].endswith(f"mlb-{run_id}-1") for op in ops) and not vms_of(fake, run_id)

    wait_for(preempted, timeout=180, what="VM 1 to be preempted and gone")
    assert runs.read_result(bucket, run_id) is None, "nobody watches a detached run: no retry yet"
    outcome = detach.wait(control, run_id)
    assert (outcome.exit_code, outcome.record.attempt) == (0, 2), outcome.record
    made = runs.read_instance(bucket, run_id, 2)
    assert made is not None and made.zone == "europe-west4-a" and not made.detached
    wait_for(lambda: not vms_of(fake, run_id), what="no VM of the run left")


def test_runs_cancel_deletes_the_vm_of_a_detached_run(world, fake):  # noqa: F811
    control = controller(world)
    run_id = detach.start(control, RunRequest("sleep", world[1], params=("seconds=300",)))
    bucket = open_bucket(world[0].bucket)
    wait_for(lambda: "tick 1/" in log_of(bucket, run_id), timeout=120, what="the job to start")
    record = detach.cancel(control, run_id)
    assert (record.status, record.run_exit_code) == (runs.CANCELLED, ExitCode.CANCELLED)
    wait_for(lambda: not vms_of(fake, run_id), what="the VM deleted")
    assert runs.read_result(bucket, run_id).status == runs.CANCELLED, "the agent did not overwrite the cancellation"


# --- issue 15 item 5: a fresh process finds the instance in the zone it was made in -------------
#
# Compute Engine's instances are zonal resources: instances.get, delete and the zone's
# operations answer 404 / nothing in any other zone
# (https://cloud.google.com/compute/docs/reference/rest/v1/instances/get). After a stockout in
# the first zone the run's instance is in the second; runs.wait and runs.cancel from another
# process (a fresh GceProvider) must act there, as attempts/<n>/instance.json records.


def started_in_second_zone(world, fake, params):  # noqa: F811
    zone_a, zone_b = world[0].zones[:2]
    fake.faults.stockout_zones = {zone_a}
    run_id = detach.start(controller(world), RunRequest("sleep", world[1], params=params))
    made = runs.read_instance(open_bucket(world[0].bucket), run_id, 1)
    assert made is not None and made.zone == zone_b, "the stockout sent the instance to the second zone"
    return run_id, zone_b


def test_runs_wait_in_a_fresh_process_follows_the_instance_in_the_second_zone(world, fake):  # noqa: F811
    run_id, _ = started_in_second_zone(world, fake, ("seconds=6",))
    outcome = detach.wait(controller(world), run_id)  # another process: it knows only the records
    assert (outcome.exit_code, outcome.record.status, outcome.record.attempt) == (0, runs.SUCCEEDED, 1), outcome.record
    wait_for(lambda: not vms_of(fake, run_id), what="no VM of the run left")


def test_runs_cancel_in_a_fresh_process_deletes_the_vm_in_the_second_zone(world, fake):  # noqa: F811
    run_id, zone_b = started_in_second_zone(world, fake, ("seconds=300",))
    bucket = open_bucket(world[0].bucket)
    wait_for(lambda: "tick 1/" in log_of(bucket, run_id), timeout=120, what="the job to start")
    record = detach.cancel(controller(world), run_id)
    assert record.status == runs.CANCELLED
    wait_for(lambda: not vms_of(fake, run_id), what="the VM deleted in its zone")
    made = runs.read_instance(bucket, run_id, 1)
    assert made is not None and made.zone == zone_b and made.deleted


def test_a_preemption_in_the_second_zone_is_retried_by_runs_wait_in_a_fresh_process(world, fake):  # noqa: F811
    fake.faults.preempt_attempts = {1: 4.0}
    run_id, zone_b = started_in_second_zone(world, fake, ("seconds=8",))
    outcome = detach.wait(controller(world), run_id)
    assert (outcome.exit_code, outcome.record.attempt) == (0, 2), outcome.record
    preempted = [op for op in list(fake.operations.values()) if op["operationType"] == "compute.instances.preempted"]
    assert any(op["targetLink"].endswith(f"/zones/{zone_b}/instances/mlb-{run_id}-1") for op in preempted)
    wait_for(lambda: not vms_of(fake, run_id), what="no VM of the run left")
