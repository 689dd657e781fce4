"""Detached runs: start one and return, follow it later, or cancel it (`run-batch --detach`,
`invoke runs.wait`, `invoke runs.cancel`).

A detached run is an ordinary run whose first instance nobody watches: on GCE its agent
deletes the VM when done and `max_run_duration` deletes it regardless; a local instance's
container removes itself. The bucket records stay the source of truth, so any machine can
take the run over later:

- `wait` becomes the run's controller from its newest attempt on: it follows that attempt
  in the zone its instance.json records, retries a preemption as an attached run would,
  deletes the instances at the end and exits with the same code. Ctrl-C or SIGTERM cancel
  the run, as for an attached run. On a sweep it only follows the sweep's records (its
  own run-batch drives it) and never starts anything.
- `cancel` records the run as cancelled (the first result record wins, so an agent that
  finishes later cannot overwrite it), then deletes its instances where they were made;
  on a sweep it stops every task (the local instances, or the Cloud Batch job).

Nobody retries a preempted detached run until someone waits on it: `runs.show` shows it
as running with a preempted last attempt.
"""

from __future__ import annotations

from collections.abc import Callable

from mlbatch.core import manifest as manifests
from mlbatch.core import runs, sweeps
from mlbatch.core.cancel import Cancelled, cancel_on_signals
from mlbatch.core.errors import BadInput, ExitCode, MlbatchError, NotFound, NotStarted
from mlbatch.run.claims import Existing
from mlbatch.run.controller import Controller
from mlbatch.run.launch import RunOutcome, RunRequest, give_back, status_of
from mlbatch.run.sweep import TaskRunner


def _spec(controller: Controller, run_id: str) -> runs.RunSpec:
    spec = runs.read_spec(controller.bucket, run_id)
    if spec is None:
        raise NotFound(f"run {run_id} does not exist in {controller.bucket.uri} (see `invoke runs`)")
    return spec


def start(controller: Controller, request: RunRequest) -> str:
    """Start the run's first attempt and return its run id once the instance exists.

    A key that already started a run returns that run's id and starts nothing; a key whose
    run another trigger is still starting is an error worth retrying (Pub/Sub redelivers),
    never an acknowledgement of a run that may not come to exist; a key whose run was claimed
    but not started launches that run. A first instance that could not be created for a
    reason that may pass (NotStarted) leaves the run for the key's next trigger.
    """
    begun = controller.begin(request)
    if isinstance(begun, Existing):
        if begun.starting:
            raise MlbatchError(
                f"idempotency key {request.idempotency_key!r}: run {begun.run_id} is still being started "
                "by another trigger; try again once it has an instance",
                ExitCode.INFRA_FAILED,
            )
        return begun.run_id
    spec, job = begun.spec, begun.job
    try:
        with cancel_on_signals():
            controller.launch(spec, job, 1, detached=True, claim=begun.claim)
    except NotStarted:
        raise  # not recorded as ended: the key's next trigger (a Pub/Sub redelivery) resumes the run
    except (Cancelled, MlbatchError) as exc:
        # Nothing watches a detached run: record how it ended here, and leave nothing behind.
        if isinstance(exc, Cancelled):
            record = controller.record_cancel(spec, 1, exc)
        else:
            record = controller.record_end(spec, status_of(exc), 1, str(exc))
        controller.delete_instance(spec.run_id, 1)
        raise MlbatchError(f"run {spec.run_id} did not start: {record.message}", ExitCode(record.run_exit_code)) from None
    finally:
        give_back(controller.bucket, begun.claim)
    controller.say(f"run {spec.run_id} started detached: `invoke runs.wait {spec.run_id}` follows it")
    return spec.run_id


def wait(controller: Controller, run_id: str) -> RunOutcome:
    """Follow a run to its end (taking over from its newest attempt); its outcome and exit code."""
    spec = _spec(controller, run_id)
    result = runs.read_result(controller.bucket, run_id)
    if result is not None:
        controller.say(f"run {run_id} already ended: {result.status}")
        return RunOutcome.of(result, attached=True)
    if sweeps.read_plan(controller.bucket, run_id) is not None:
        controller.say(f"following sweep {run_id} through its records (its run-batch runs its tasks)")
        return controller.attach(run_id)
    job = manifests.load(controller.bucket, spec.version).jobs[spec.job]
    made = [n for n in runs.attempt_numbers(controller.bucket, run_id) if runs.read_instance(controller.bucket, run_id, n)]
    newest = made[-1] if made else 1
    controller.say(f"following run {run_id} from attempt {newest}")
    with cancel_on_signals():
        outcome = controller.attempts(spec, job, first=newest, adopt=bool(made))
    outcome.attached = True
    return outcome


def cancel(controller: Controller, run_id: str, tasks: Callable[[], TaskRunner] | None = None) -> runs.ResultRecord:
    """End the run as cancelled and delete its instances; the run's result record afterwards.

    A sweep's tasks are stopped by its task runner (`tasks` makes it: the local instances or
    the Cloud Batch job of the profile)."""
    spec = _spec(controller, run_id)
    result = runs.read_result(controller.bucket, run_id)
    if result is not None:
        controller.say(f"run {run_id} already ended: {result.status}; nothing to cancel")
        return result
    if sweeps.read_plan(controller.bucket, run_id) is not None:
        if tasks is None:
            raise BadInput(f"run {run_id} is a sweep: cancelling it needs its profile's task runner")
        record = controller.record_end(spec, runs.CANCELLED, 0, "cancelled by runs.cancel; its tasks were stopped")
        tasks().stop(run_id)
        return record
    attempts = runs.attempt_numbers(controller.bucket, run_id) or [1]
    record = controller.record_end(spec, runs.CANCELLED, attempts[-1], "cancelled by runs.cancel; instance deleted")
    for attempt in attempts:
        controller.adopt(run_id, attempt)
        controller.delete_instance(run_id, attempt)
    return record
