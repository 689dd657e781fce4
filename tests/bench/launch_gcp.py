"""Where a run's time goes on the gcp code path, the controller's own part apart from the cloud's:
`invoke bench.launch-gcp` (or `python -m tests.bench.launch_gcp --rounds 3`).

The real controller and gce provider run a no-op run against the fake Compute API, whose
instances take as long as users report real ones do (the figures below, each with where it
comes from). The fake boots no container: a stand-in guest per instance waits out the boot,
then does what the agent does with the agent's own code (a progress record, the attempt's
records, the recorded marker on the serial console), and deletes its own VM as the agent does.
So the cloud's part of each phase is known (the figures), and the rest is the controller's:
its API calls, its waits between polls, its records.

Run in-process, the controller's imports are not in the run's wall time: they are measured
apart, as the seconds a fresh interpreter takes to import what `run-batch --profile gcp` does.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from mlbatch.agent.runner import Attempt
from mlbatch.core import runs
from mlbatch.core.bucket import FileBucket
from mlbatch.providers.gce import GceProvider
from mlbatch.run.controller import Controller, RunRequest
from tests.bench.control_plane import PROJECT, VERSION, bench_release
from tests.conftest import ROOT
from tests.support.fake_compute import FakeCompute, FakeInstance, Latencies

# instances.insert until RUNNING (its operation DONE): `gcloud compute instances create` of an
# n1-standard-1 returned RUNNING in 9.4 s, run after run ("COS VM create takes ~10s",
# https://gist.github.com/ImJasonH/d3d26f15a52a079e1e0691cced5779b4).
INSERT_SECONDS = 9.4
# RUNNING until the guest runs the agent: ~23-25 s from the request to SSH for Debian VMs of up to
# 32 vCPUs over ~5,000 boots (Aboukhalil, "Move Fast and Break the Cloud: a benchmark of VM boot
# times on the Google Cloud", https://medium.com/@robaboukhalil/move-fast-and-break-the-cloud-b55b899e3683),
# less the ~10 s to RUNNING above. Google's Colt McAnlis measured 41.5 s to SSH for a 2-vCPU Debian
# VM (https://medium.com/google-cloud/understanding-and-profiling-gce-cold-boot-time-32c209fe86ab): slower.
BOOT_SECONDS = 15.0
# instances.delete of a running Debian VM: ~20 s (a stopped one ~10 s), measured through the
# console (https://github.com/nanovms/nanos/issues/1349#issuecomment, francescolavra, 2021-01-02);
# the gist above reports 2 min 18 s for COS VMs through gcloud: this is the kind end.
DELETE_SECONDS = 20.0


def _unix(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp()


class Guest:
    """Stand-in guests: boot, then the agent's records through the agent's own Attempt, the
    recorded marker on the serial console, and the agent's delete of its own VM."""

    def __init__(self, fake: FakeCompute, workdir: Path, boot_seconds: float):
        self.fake, self.workdir, self.boot_seconds = fake, workdir, boot_seconds
        self.running_at: dict[str, float] = {}  # instance -> when it turned RUNNING
        self.self_delete_at: dict[str, float] = {}  # instance -> when its agent asked for its delete

    def __call__(self, instance: FakeInstance) -> None:
        self.running_at[instance.name] = time.time()
        time.sleep(self.boot_seconds)
        attrs = instance.metadata()
        spec = runs.RunSpec.from_json(attrs["mlbatch-run-spec"], "mlbatch-run-spec")
        with contextlib.redirect_stdout(io.TextIOWrapper(io.BytesIO())):  # the agent prints to its console
            attempt = Attempt(spec, int(attrs["mlbatch-attempt"]), instance.name, self.workdir / instance.name)
            with attempt.phase(runs.RUN):
                pass  # the no-op job
            attempt.log.close()
            attempt.record(runs.SUCCEEDED, 0)
        with self.fake._lock:
            instance.serial += f"{runs.AGENT_RECORDED_MARKER}: attempt {attempt.attempt} {runs.SUCCEEDED}\n".encode()
        self.self_delete_at[instance.name] = time.time()
        url = f"{self.fake.endpoint}/compute/v1/projects/{PROJECT}/zones/{instance.zone}/instances/{instance.name}"
        with contextlib.suppress(urllib.error.HTTPError):  # the controller's delete may come first
            urllib.request.urlopen(urllib.request.Request(url, method="DELETE"), timeout=30).close()


def one_run(bucket: FileBucket, settings, guest: Guest, delete_seconds: float) -> dict[str, float]:
    """One run to its end; its segments in seconds, from its records and the guest's times."""
    controller = Controller(bucket, GceProvider(settings), lambda _: None, lambda _: None)
    started = time.time()
    outcome = controller.run(RunRequest("sleep", VERSION, params=("seconds=0",), timeout_seconds=60))
    ended = time.time()
    if outcome.exit_code != 0:
        raise RuntimeError(f"bench run {outcome.run_id} failed: {outcome.record.message}")
    run_id = outcome.run_id
    spec = runs.read_spec(bucket, run_id)
    instance = runs.read_instance(bucket, run_id, 1)
    attempt = runs.read_attempt(bucket, run_id, 1)
    assert spec is not None and instance is not None and attempt is not None and instance.deleted
    name = instance.instance
    insert_at = _unix(instance.created) - instance.phases["create"]
    created_at, running_at = _unix(instance.created), guest.running_at[name]
    agent_at, recorded_at = _unix(attempt.started), _unix(attempt.finished)
    deleted_at = _unix(instance.deleted)
    teardown_at = deleted_at - instance.phases["teardown"]
    cloud = {
        "insert": running_at - insert_at,
        "boot": agent_at - running_at,
        "delete": max(0.0, guest.self_delete_at[name] + delete_seconds - teardown_at),  # what the controller waits of it
    }
    return {
        "wall": ended - started,
        "controller: validate, spec.json, idempotency, slot": insert_at - started,
        "create: insert until its operation is DONE": created_at - insert_at,
        "  of which the cloud (instances.insert)": cloud["insert"],
        "boot: RUNNING until the agent starts (the cloud)": cloud["boot"],
        "agent: the no-op attempt and its records": recorded_at - agent_at,
        "controller sees the result": teardown_at - recorded_at,
        "teardown: delete until gone": deleted_at - teardown_at,
        "  of which the cloud (the rest of the agent's own delete)": cloud["delete"],
        "controller: summary after the delete": ended - deleted_at,
        "the cloud, all told": sum(cloud.values()),
        "the controller's own (the wall less the cloud and the agent)": (
            ended - started - sum(cloud.values()) - (recorded_at - agent_at)
        ),
    }


def import_seconds(rounds: int) -> list[float]:
    """A fresh interpreter importing what `run-batch --profile gcp` imports (the compute client)."""
    code = "import tasks, mlbatch.run.commands, mlbatch.run.controller, mlbatch.providers.gce"
    out = []
    for _ in range(rounds):
        start = time.monotonic()
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
        out.append(time.monotonic() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="runs measured, one after another")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the cloud's figures (0.1 for a quick look)")
    args = parser.parse_args()
    insert, boot, delete = INSERT_SECONDS * args.scale, BOOT_SECONDS * args.scale, DELETE_SECONDS * args.scale
    fake = FakeCompute(PROJECT, boot_containers=False, latencies=Latencies(instance_insert=insert, instance_delete=delete))
    fake.start()
    rows: list[dict[str, float]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-launch-gcp-") as root:
            bucket = FileBucket(Path(root) / "bucket")
            settings = bench_release(fake, bucket)
            guest = Guest(fake, Path(root) / "guests", boot)
            fake.on_running = guest
            for i in range(args.rounds):
                rows.append(one_run(bucket, settings, guest, delete))
                print(f"round {i + 1}/{args.rounds}: {rows[-1]['wall']:.1f}s", flush=True)
    finally:
        fake.stop()
    imports = import_seconds(max(3, args.rounds))
    print(
        f"\none no-op run on the gcp code path, the fake Compute API at insert {insert:g}s, boot {boot:g}s, "
        f"delete {delete:g}s (median of {args.rounds}, min-max)"
    )
    for key in rows[0]:
        values = [r[key] for r in rows]
        print(f"  {key:<62} {statistics.median(values):7.2f}s ({min(values):.2f}-{max(values):.2f})")
    print(f"  {'the controller start: imports of the gcp path (not in the wall)':<62} {statistics.median(imports):7.2f}s")


if __name__ == "__main__":
    main()
