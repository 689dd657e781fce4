"""`invoke bench.sweep`: a sweep of N tasks against N separate run-batch calls, side by side.

Baseline: what a scheduler does today, a loop of N `run-batch` calls (each its own
instance, created, watched and deleted). Candidate: one `run-batch --sweep` of the same N
params sets, at most P at once (on gcp one Cloud Batch job). Both run on the profile's
provider; the table gives wall time and API calls for each, and their ratios.

API calls are the HTTP requests the controller makes to the compute side: the Compute
Engine and Cloud Batch APIs on gcp, the Docker engine on the local profile (bucket reads
and writes are not counted). They are counted with a response hook on each client's
requests session.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from mlbatch.core.bucket import Bucket
from mlbatch.providers.base import Provider
from mlbatch.run.controller import Controller, RunRequest
from mlbatch.run.sweep import Sweep, SweepRequest, TaskRunner
from mlbatch.ui import Say


def _sessions(client: Any) -> list[Any]:
    """The requests sessions behind a provider: the Docker SDK's APIClient, or google clients' REST transports."""
    found = []
    for name in ("client", "instances", "operations"):
        part = getattr(client, name, None)
        session = getattr(getattr(part, "_transport", None), "_session", None) or getattr(part, "api", None)
        if session is not None and hasattr(session, "hooks"):
            found.append(session)
    return found


class CallCounter:
    """Counts HTTP responses of the sessions it hooks into."""

    def __init__(self, *clients: Any):
        self.count = 0
        for client in clients:
            for session in _sessions(client):
                session.hooks["response"].append(self._hook)

    def _hook(self, response, *args, **kwargs):
        self.count += 1
        return response


def bench_sweep(
    bucket: Bucket,
    provider: Provider,
    runner: TaskRunner,
    runner_client: Any,
    version: str,
    tasks: int,
    parallelism: int,
    say: Say,
    job: str = "sleep",
    seconds: int = 1,
) -> list[tuple[str, str]]:
    quiet: Callable[[str], None] = lambda _: None  # noqa: E731
    messages = [f"t{i}" for i in range(tasks)]
    calls = CallCounter(provider)
    start = time.monotonic()
    for i, message in enumerate(messages):
        outcome = Controller(bucket, provider, quiet, quiet).run(
            RunRequest(job, version, params=(f"seconds={seconds}", f"message={message}"))
        )
        if outcome.exit_code:
            raise RuntimeError(f"bench run {outcome.run_id} failed: {outcome.result.get('message')}")
        say(f"separate run {i + 1}/{tasks}: {time.monotonic() - start:.1f}s so far")
    separate_time, separate_calls = time.monotonic() - start, calls.count

    sweep_calls = CallCounter(runner_client)
    start = time.monotonic()
    request = SweepRequest(
        job, version, sweeps=(f"message={','.join(messages)}",), params=(f"seconds={seconds}",), parallelism=parallelism
    )
    outcome, _ = Sweep(bucket, runner, quiet).run(request)
    if outcome.exit_code:
        raise RuntimeError(f"bench sweep {outcome.run_id} failed: {outcome.result.get('message')}")
    sweep_time = time.monotonic() - start
    say(f"sweep of {tasks} tasks: {sweep_time:.1f}s")
    return [
        ("job", f"{job} seconds={seconds} of {version}, {tasks} params sets"),
        (f"{tasks} separate run-batch calls", f"{separate_time:.1f}s, {separate_calls} API calls"),
        (f"one sweep, parallelism {parallelism}", f"{sweep_time:.1f}s, {sweep_calls.count} API calls"),
        ("wall time ratio (sweep / separate)", f"{sweep_time / separate_time:.2f}x"),
        ("API calls ratio (sweep / separate)", f"{sweep_calls.count / max(separate_calls, 1):.2f}x"),
    ]
