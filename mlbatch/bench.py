"""`invoke bench.run`: what an ephemeral mlbatch instance costs over running the job by hand.

Baseline: `docker run` of the release's container with the code mounted, as a hand-written
script would. Candidate: `run-batch` of the same job (instance, agent, pull by digest,
bundle fetch and check, log flushing, results upload, teardown). Runs alternate, so both
see the same machine; medians and their ratio are printed, with the candidate's phases.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from mlbatch.core import manifest as manifests
from mlbatch.core import runs
from mlbatch.core.bucket import Bucket
from mlbatch.core.bundle import extract_bundle
from mlbatch.local.infra import docker_client
from mlbatch.providers.base import Provider
from mlbatch.run.controller import Controller, RunRequest
from mlbatch.ui import Say


def _baseline(client, container: str, argv: list[str], code: Path) -> float:
    with tempfile.TemporaryDirectory(prefix="bench-results-") as results:
        start = time.monotonic()
        client.containers.run(
            container,
            argv,
            working_dir="/code",
            network_mode="host",
            remove=True,
            volumes={str(code): {"bind": "/code", "mode": "ro"}, results: {"bind": "/results", "mode": "rw"}},
            environment={"MLBATCH_RESULTS_DIR": "/results"},
        )
        return time.monotonic() - start


def bench_run(
    bucket: Bucket, provider: Provider, version: str, job: str, params: tuple[str, ...], repeat: int, say: Say
) -> list[tuple[str, str]]:
    manifest = manifests.load(bucket, version)
    spec = manifest.jobs[job]
    controller = Controller(bucket, provider, lambda _: None, lambda _: None)
    prepared_params = spec.resolve_params(dict(p.split("=", 1) for p in params))
    argv = spec.argv(prepared_params)
    container = manifest.containers[spec.container].ref
    client = docker_client()
    client.images.pull(container)
    baseline: list[float] = []
    candidate: list[float] = []
    phases: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-code-") as code:
        extract_bundle(bucket.read(manifest.code.uri.removeprefix(bucket.uri + "/")), Path(code))
        for i in range(repeat):
            baseline.append(_baseline(client, container, argv, Path(code)))
            start = time.monotonic()
            outcome = controller.run(RunRequest(job, version, params=params))
            candidate.append(time.monotonic() - start)
            if outcome.exit_code != 0:
                raise RuntimeError(f"bench run {outcome.run_id} failed: {outcome.record.message}")
            for name, seconds in outcome.phases.items():
                phases.setdefault(name, []).append(seconds)
            say(f"round {i + 1}/{repeat}: docker run {baseline[-1]:.2f}s, run-batch {candidate[-1]:.2f}s")
    base, cand = statistics.median(baseline), statistics.median(candidate)
    rows = [
        ("job", f"{job} {' '.join(params)} of {version}"),
        ("rounds", str(repeat)),
        ("docker run (baseline)", f"{base:.2f}s median"),
        ("run-batch", f"{cand:.2f}s median"),
        ("ratio", f"{cand / base:.2f}x"),
        ("overhead", f"{cand - base:.2f}s"),
    ]
    medians = {name: statistics.median(seconds) for name, seconds in phases.items()}
    rows.append(("run-batch phases", ", ".join(f"{name} {s:.2f}s" for name, s in runs.phases_in_order(medians))))
    return rows
