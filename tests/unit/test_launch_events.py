"""Launch overhead (issue 19): the controllers wait on events where the provider has them, the
agent says when its records are written, a sweep creates a wave of instances at once, and the
commands end without the interpreter's final collection. No timings: each test would wait an
hour (a poll) or fail outright (a barrier nobody else reaches) without what it pins; the joins'
bounds only keep a broken build from hanging the suite."""

from __future__ import annotations

import dataclasses
import io
import subprocess
import sys
import threading
from pathlib import Path

from mlbatch.agent.runner import Attempt
from mlbatch.core import runs
from mlbatch.core.bucket import FileBucket
from mlbatch.providers.base import RUNNING, InstanceRequest
from mlbatch.run.controller import RunRequest
from mlbatch.run.deadlines import Margins
from mlbatch.run.sweep import Sweep, SweepRequest
from mlbatch.run.sweep_local import LocalTasks
from tests.conftest import ROOT
from tests.support.memory_provider import MemoryInstance, MemoryProvider, succeed
from tests.support.releases import publish_release
from tests.unit.conftest import VERSION, FastController

AN_HOUR = 3600.0
GUARD = 120  # seconds a broken build may take before the test says so, instead of hanging


class HourlyController(FastController):
    poll = AN_HOUR  # a run that ended only at a poll would not end in this test
    state_check_every = AN_HOUR
    margins = Margins()  # and no deadline ends it first


class WatchedBucket(FileBucket):
    """Says when the controller has first looked for the run's result."""

    def __init__(self, root: Path):
        super().__init__(root)
        self.looked = threading.Event()

    def read(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        try:
            return super().read(key, start, end)
        finally:
            if key.endswith("/result.json"):
                self.looked.set()


class LateAgent(MemoryProvider):
    """Its agent records once the controller is watching, prints its marker, and stays up."""

    def __init__(self, workdir: Path, bucket: WatchedBucket):
        super().__init__(workdir)
        self.bucket = bucket

    def create(self, request: InstanceRequest, zone: str) -> None:
        self.instances[request.name] = MemoryInstance(request, zone, dict(request.labels), RUNNING)
        self.requests.append((request, zone))

    def console(self, name: str, stop: threading.Event):
        request = self.instances[name].request
        assert request is not None
        self.bucket.looked.wait()  # the controller found no result: from here it waits
        attempt = Attempt(request.spec, request.attempt, name, self.workdir / name)
        attempt.log.close()
        out = io.StringIO()
        sys_stdout, sys.stdout = sys.stdout, out
        try:
            attempt.record(runs.SUCCEEDED, 0)
        finally:
            sys.stdout = sys_stdout
        yield "a line of the job"
        yield from out.getvalue().splitlines()  # the agent's marker, as its console shows it
        stop.wait()


def test_the_controller_reads_the_result_when_the_agent_says_it_is_written(tmp_path):
    bucket = WatchedBucket(tmp_path / "bucket")
    publish_release(bucket, VERSION)
    provider = LateAgent(tmp_path / "instances", bucket)
    lines: list[str] = []
    controller = HourlyController(bucket, provider, lines.append, lines.append)
    outcome: list = []
    runner = threading.Thread(target=lambda: outcome.append(controller.run(RunRequest("sleep", VERSION))), daemon=True)
    runner.start()
    runner.join(GUARD)
    assert outcome and outcome[0].exit_code == 0, "the run ended on the agent's marker, not at the next poll"
    assert "a line of the job" in lines and not any(runs.AGENT_RECORDED_MARKER in line for line in lines), (
        "the marker is the agent's word to the controller, not output to show"
    )


def test_the_agent_says_its_records_are_written_only_once_they_are(tmp_path, monkeypatch):
    from tests.unit.test_records import SPEC

    bucket = FileBucket(tmp_path / "bucket")
    spec = dataclasses.replace(SPEC, bucket=bucket.uri)
    attempt = Attempt(spec, 1, "mlb-x-1", tmp_path / "work")
    attempt.log.close()
    seen: list[bool] = []

    class Console(io.StringIO):
        def write(self, text: str) -> int:
            if runs.AGENT_RECORDED_MARKER in text:
                seen.append(runs.read_result(bucket, spec.run_id) is not None)
            return super().write(text)

    monkeypatch.setattr(sys, "stdout", Console())
    attempt.record(runs.SUCCEEDED, 0)
    assert seen == [True]


class Together(MemoryProvider):
    """Creates that meet at a barrier: they pass only when `parties` of them are under way at once."""

    creates_at_once = 3

    def __init__(self, workdir: Path, parties: int):
        super().__init__(workdir, zones=("europe-west4-a",))
        self._lock = threading.RLock()  # create holds it around MemoryProvider.create, which takes it too
        self.barrier = threading.Barrier(parties, timeout=GUARD)
        self.ended: list[str] = []
        self.told = threading.Condition()

    def create(self, request: InstanceRequest, zone: str) -> None:
        self.barrier.wait()
        with self._lock:  # the script is popped by one create at a time (their order is not the point here)
            super().create(request, zone)
        with self.told:
            self.ended.append(request.name)  # its agent has recorded (in memory, before create returns)
            self.told.notify_all()

    def ends(self, run_id: str, stop: threading.Event):
        told = 0
        while not stop.is_set():
            with self.told:
                self.told.wait_for(lambda told=told: len(self.ended) > told or stop.is_set(), timeout=1)
                fresh, told = self.ended[told:], len(self.ended)
            yield from fresh


class HourlyTasks(LocalTasks):
    poll = AN_HOUR
    state_check_every = AN_HOUR


def test_a_sweep_creates_its_nodes_at_once_and_ends_as_the_engine_says_they_end(tmp_path):
    bucket = FileBucket(tmp_path / "bucket")
    publish_release(bucket, VERSION)
    provider = Together(tmp_path / "instances", parties=3)
    provider.script(*[succeed() for _ in range(6)])
    outcome: list = []
    request = SweepRequest("sleep", VERSION, sweeps=("seconds=1,2,3,4,5,6",), parallelism=3)
    runner = threading.Thread(
        target=lambda: outcome.append(Sweep(bucket, HourlyTasks(bucket, provider, lambda _: None), lambda _: None).run(request)),
        daemon=True,
    )
    runner.start()
    runner.join(GUARD)
    assert outcome, "three creates under way at once (the barrier), the sweep's end seen as the nodes' ends were told"
    result, tasks = outcome[0]
    assert result.exit_code == 0 and [t.status for t in tasks] == [runs.SUCCEEDED] * 6
    assert len(provider.requests) == 3 and sorted(r.task for r in provider.node_tasks) == [0, 1, 2, 3, 4, 5]


def test_the_commands_skip_the_collection_at_exit():
    """gc.freeze as the mlbatch command ends: the interpreter's last collection skips every object."""
    code = (
        "import atexit, gc, sys; atexit.register(lambda: print('frozen', gc.get_freeze_count()));"
        "sys.argv = ['mlbatch', '--version']; from mlbatch.cli import main; main()"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True).stdout
    frozen = int(out.split("frozen ")[1])
    assert frozen > 10_000, out
