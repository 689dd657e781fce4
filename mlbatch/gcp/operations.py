"""The one waiter for Compute Engine operations: zonal (instances), regional and global (images).

`zoneOperations.wait`, `regionOperations.wait` and `globalOperations.wait` each "wait for no
more than the default deadline (2 minutes) and then return the current state of the
operation, which might be DONE or still in progress", and may return early, even "after zero
seconds" (https://cloud.google.com/compute/docs/reference/rest/v1/globalOperations/wait). So:
each call's client timeout is above the server's 2-minute hold (a shorter one cuts off a wait
that was going fine: creating an image takes minutes), a wait that returns before DONE is
asked again, transient errors (429, 5xx, connection errors, our own timeout) are retried with
backoff, the whole is bounded, and a long wait says so every `progress_every` seconds. A DONE
operation's errors become the mlbatch error they mean (errors.operation_error).

Our own clients on our own endpoint: ExtendedOperation.result() would poll the default endpoint.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from google.api_core.retry import exponential_sleep_generator

from mlbatch.core import gcp_base
from mlbatch.core.errors import MlbatchError
from mlbatch.core.gcp_base import transient
from mlbatch.gcp import errors
from mlbatch.gcp.clients import Clients

SERVER_HOLD = 120.0  # the longest a *Operations.wait holds before it answers (documented: 2 minutes)
_PROJECT = re.compile(r"/projects/([^/]+)/")


def _last(link: str) -> str:
    return link.rstrip("/").rsplit("/", 1)[-1]


class Waiter:
    call_timeout = SERVER_HOLD + 30.0  # the client waits longer than the server holds a wait
    progress_every = 30.0  # seconds between "still waiting" lines on a long wait
    pause = 0.5  # before asking again after a wait answered early
    shortest_call = 1.0  # a call's client timeout when little of the bound is left

    def __init__(self, clients: Clients, project: str):
        self.clients, self.project = clients, project

    def wait(self, op: Any, what: str, *, bound: float, where: str = "", say: Callable[[str], None] | None = None) -> Any:
        """Wait until `op` (a compute_v1.Operation) is DONE, at most `bound` seconds; return it, or raise
        its error as the mlbatch error it means (capacity in `where` sends a run to the next zone)."""
        from google.cloud import compute_v1

        done = compute_v1.Operation.Status.DONE
        started = time.monotonic()
        backoff = exponential_sleep_generator(gcp_base.BACKOFF_FIRST, 5.0, 2.0)  # as every retried call's
        with self._progress(say, f"{what}: waiting for operation {op.name}", started):
            while op.status != done:
                now = time.monotonic()
                if now - started > bound:
                    raise MlbatchError(f"{what}: operation {op.name} not done after {bound:g}s")
                try:
                    op = self._wait_once(op, timeout=max(self.shortest_call, min(self.call_timeout, started + bound - now)))
                except Exception as exc:  # noqa: BLE001 - transient ones are retried, the rest translated
                    if not transient(exc):
                        raise errors.translate(exc, what) from exc
                    time.sleep(next(backoff))
                    continue
                if op.status != done:
                    time.sleep(self.pause)
        if op.error and op.error.errors:
            codes = [e.code for e in op.error.errors]
            message = "; ".join(f"{e.code}: {e.message}" for e in op.error.errors)
            raise errors.operation_error(codes, message, what, where)
        return op

    @contextlib.contextmanager
    def _progress(self, say: Callable[[str], None] | None, line: str, started: float) -> Iterator[None]:
        """Say `line` with the time waited every progress_every seconds, while a wait call may hold for minutes."""
        if say is None:
            yield
            return
        stop = threading.Event()

        def tick() -> None:
            while not stop.wait(self.progress_every):
                say(f"{line}: still running after {time.monotonic() - started:.0f}s")

        ticker = threading.Thread(target=tick, daemon=True)
        ticker.start()
        try:
            yield
        finally:
            stop.set()
            ticker.join()

    def _wait_once(self, op: Any, timeout: float) -> Any:
        """One *Operations.wait of the operation's own scope, no retries (the loop above retries)."""
        project = (_PROJECT.search(op.self_link or "") or [None, self.project])[1]
        if op.zone:
            client = self.clients.compute("ZoneOperationsClient")
            return client.wait(project=project, zone=_last(op.zone), operation=op.name, retry=None, timeout=timeout)
        if op.region:
            client = self.clients.compute("RegionOperationsClient")
            return client.wait(project=project, region=_last(op.region), operation=op.name, retry=None, timeout=timeout)
        client = self.clients.compute("GlobalOperationsClient")
        return client.wait(project=project, operation=op.name, retry=None, timeout=timeout)
