"""Each attempt on its own: its results apart from every other attempt's (issue 17, bug 5),
and a deadline that follows the phase its agent is in, so that a slow pull or a big upload
is not cut by one margin shared with the job's timeout (bug 7)."""

from __future__ import annotations

import threading
import time

import pytest

from mlbatch.agent.runner import Attempt
from mlbatch.core import runs, sweeps
from mlbatch.core.errors import ExitCode
from mlbatch.run.controller import RunRequest
from mlbatch.run.deadlines import Margins
from mlbatch.run.sweep import Sweep, SweepRequest
from mlbatch.run.sweep_local import LocalTasks
from tests.support.memory_provider import preempt, stay_in, succeed
from tests.unit.conftest import VERSION, FastController


def listed(bucket, prefix: str) -> dict[str, bytes]:
    return {key.removeprefix(prefix + "/"): bucket.read(key) for key in bucket.list(prefix)}


# --- bug 5: attempts share one results prefix ------------------------------------------------


def test_a_retry_does_not_mix_its_results_with_a_preempted_attempts(controller, provider, bucket):
    provider.script(
        preempt(results={"model.bin": b"half a model", "checkpoints/step-900": b"x"}),
        succeed(results={"model.bin": b"the whole model"}),
    )
    outcome = controller.run(RunRequest("sleep", VERSION))
    assert outcome.exit_code == 0 and outcome.record.attempt == 2
    results = outcome.record.results.removeprefix(bucket.uri + "/")
    assert listed(bucket, results) == {"model.bin": b"the whole model"}, "only the attempt that ended the run"
    first = runs.read_attempt(bucket, outcome.run_id, 1)
    assert first is not None and listed(bucket, first.results.removeprefix(bucket.uri + "/")) == {
        "model.bin": b"half a model",
        "checkpoints/step-900": b"x",
    }, "the preempted attempt's partial upload is kept apart, under its own attempt"


def test_a_retried_sweep_task_ranks_by_its_own_results(bucket, provider):
    provider.script(preempt(results={"metrics.json": b'{"ticks": 99}'}), succeed(results={"metrics.json": b'{"ticks": 2}'}))
    outcome, tasks = Sweep(bucket, LocalTasks(bucket, provider, print), print).run(
        SweepRequest("sleep", VERSION, sweeps=("seconds=2",))
    )
    assert outcome.exit_code == 0 and tasks[0].attempts == 2
    assert tasks[0].metrics == {"ticks": 2}, "the metrics of the attempt that ended the task"
    assert listed(bucket, sweeps.task_key(outcome.run_id, 0, "results")) == {"metrics.json": b'{"ticks": 99}'}


def test_an_attempt_record_names_its_own_results(tmp_path, bucket):
    spec = runs.RunSpec(
        run_id="sleep-20261125-030000-aaaa",
        job="sleep",
        version=VERSION,
        bucket=bucket.uri,
        container="c@sha256:" + "0" * 64,
        code_key="k",
        code_sha256="0" * 64,
        argv=("python",),
        params={},
        timeout_seconds=10,
        created=runs.now_iso(),
        vm_image="i",
    )
    names = []
    for attempt in (1, 2):
        agent = Attempt(spec, attempt, f"mlb-x-{attempt}", tmp_path / str(attempt))
        agent.log.close()
        names.append(agent.record(runs.PREEMPTED, -1).results)
    assert names == [bucket.url(runs.results_prefix(spec.run_id, n)) for n in (1, 2)] and names[0] != names[1]


# --- bug 7: pull and upload shared one margin --------------------------------------------------


class PatientController(FastController):
    """No margin for boot or for the job's end; a long one for the upload."""

    margins = Margins(start=0, run_grace=0, upload=3600)


def watched_past(provider, deadline: float, watcher: threading.Thread) -> None:
    """Return once the watcher (it looks at the instance's state on each round: state_check_every 0)
    has made a whole round after `deadline`, or has ended: a deadline shared by every phase would
    have ended the attempt in that round."""
    while time.time() <= deadline:
        time.sleep(0.01)
    seen = provider.state_checks
    while provider.state_checks < seen + 2 and watcher.is_alive():  # round seen+1 ended before check seen+2
        time.sleep(0.001)


def test_a_big_upload_past_the_jobs_timeout_is_waited_for(bucket, provider):
    provider.script(stay_in(runs.UPLOAD))
    controller = PatientController(bucket, provider, print, print)
    outcomes = {}
    run = threading.Thread(
        target=lambda: outcomes.setdefault("run", controller.run(RunRequest("sleep", VERSION, timeout_seconds=1)))
    )
    run.start()
    while not provider.requests:
        time.sleep(0.005)
    (request, _), created = provider.requests[0], time.time()
    watched_past(provider, created + request.spec.timeout_seconds, run)  # past timeout + margins (0): a shared deadline
    assert run.is_alive() and runs.read_result(bucket, request.spec.run_id) is None, "still uploading: not a timeout"
    agent = Attempt(request.spec, 1, request.name, provider.workdir / "late-upload")  # the upload ends; the agent records
    agent.log.close()
    agent.record(runs.SUCCEEDED, 0)
    run.join(timeout=30)
    assert outcomes["run"].exit_code == 0 and outcomes["run"].record.recorded_by == runs.AGENT
    assert provider.running() == []


@pytest.mark.parametrize(
    ("phase", "margins", "said"),
    [
        (runs.PULL, Margins(start=0, run_grace=3600, upload=3600), "the job to start (in pull; 0s margin)"),
        (runs.RUN, Margins(start=3600, run_grace=0, upload=3600), "the job to end (its timeout is 1s)"),
        (runs.UPLOAD, Margins(start=3600, run_grace=3600, upload=0), "the results upload (0s margin)"),
    ],
)
def test_each_phase_times_out_on_its_own_margin(bucket, provider, phase, margins, said):
    provider.script(stay_in(phase))
    controller = FastController(bucket, provider, print, print)
    controller.margins = margins
    outcome = controller.run(RunRequest("sleep", VERSION, timeout_seconds=1))
    assert (outcome.exit_code, outcome.record.recorded_by) == (ExitCode.TIMEOUT, runs.CONTROLLER)
    assert outcome.record.message.endswith(f"timed out waiting for {said}")
    assert provider.running() == []


def test_a_sweep_task_uploading_past_its_timeout_is_waited_for(bucket, provider):
    class PatientTasks(LocalTasks):
        poll = 0.001
        state_check_every = 0.0
        margins = PatientController.margins

    provider.script(stay_in(runs.UPLOAD))
    outcomes = {}
    tasks = PatientTasks(bucket, provider, print)
    request = SweepRequest("sleep", VERSION, sweeps=("seconds=1",), timeout_seconds=1)
    sweep = threading.Thread(target=lambda: outcomes.setdefault("sweep", Sweep(bucket, tasks, print).run(request)))
    sweep.start()
    while not provider.requests:
        time.sleep(0.005)
    (made, _), created = provider.requests[0], time.time()
    watched_past(provider, created + made.spec.timeout_seconds, sweep)
    assert sweep.is_alive(), "still uploading: not a timeout"
    keys = sweeps.RecordKeys.for_task(made.spec.run_id, 0, 1)
    agent = Attempt(made.spec, 1, made.name, provider.workdir / "late-upload", keys)
    agent.log.close()
    agent.record(runs.SUCCEEDED, 0)
    sweep.join(timeout=30)
    outcome, records = outcomes["sweep"]
    assert outcome.exit_code == 0 and records[0].status == runs.SUCCEEDED
