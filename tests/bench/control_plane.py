"""Control-plane cost of runs, measured: `invoke bench.control-plane` (or
`python -m tests.bench.control_plane --minutes 10 --runs 20`).

The real controller and gce provider run against the fake Compute API (which counts API
calls per method), with a file:// bucket that counts calls and bytes. Instances run no
container: a guest thread per instance plays the agent with the real LogSink and records
(one log line a second for the job's length, then result.json and a self-delete), so what
is measured is the control plane, not the job. Prints Compute calls per run-minute by
method, bucket reads per run-minute, and bytes uploaded per log byte, for one run alone
and for N concurrent runs.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from mlbatch.agent.logsink import LogSink
from mlbatch.core import manifest as manifests
from mlbatch.core import runs
from mlbatch.core.bucket import FileBucket
from mlbatch.core.catalog import Job, Param
from mlbatch.core.settings import Settings, load_settings
from mlbatch.providers.gce import GceProvider
from mlbatch.run.controller import Controller, RunRequest
from tests.conftest import ROOT, repo_config
from tests.support.fake_compute import FakeCompute

PROJECT = "mlbatch-test"
VERSION = "v0.0.1-bench"


class CountingBucket(FileBucket):
    """A file:// bucket that counts calls per method and the log bytes written or appended."""

    def __init__(self, root: Path):
        super().__init__(root)
        self.calls: collections.Counter[str] = collections.Counter()
        self.bytes_up = 0
        self._lock = threading.Lock()

    def _count(self, method: str, key: str, size: int = 0) -> None:
        with self._lock:
            self.calls[method] += 1
            self.bytes_up += size if key.endswith("/log") else 0

    def read(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        self._count("read", key)
        return super().read(key, start, end)

    def write(self, key: str, data: bytes, *, immutable: bool = False) -> None:
        self._count("write", key, len(data))
        super().write(key, data, immutable=immutable)

    def size(self, key: str) -> int:  # a metadata read (on GCS, the appender's look before each append)
        self._count("read", key)
        return super().size(key)

    def append(self, key: str, data: bytes, *, at: int) -> None:
        self._count("append", key, len(data))
        super().append(key, data, at=at)


def _guest(fake: FakeCompute, bucket: CountingBucket, seconds: int, log_bytes: collections.Counter[str]):
    def play(instance) -> None:
        attrs = instance.metadata()
        spec = runs.RunSpec.from_json(attrs["mlbatch-run-spec"], "mlbatch-run-spec")
        attempt = int(attrs["mlbatch-attempt"])
        with tempfile.TemporaryDirectory(prefix="bench-guest-") as work:
            sink = LogSink(
                bucket, runs.attempt_key(spec.run_id, attempt, "log"), Path(work) / "attempt.log", console=io.BytesIO()
            )
            for i in range(seconds):
                line = f"step {i + 1}/{seconds}: loss {1 / (i + 1):.6f} " + "x" * 60
                sink.write(line)
                with fake._lock:
                    instance.serial += (line + "\n").encode()
                time.sleep(1)
            sink.close()
            log_bytes[spec.run_id] = (Path(work) / "attempt.log").stat().st_size
        record = runs.AttemptRecord(
            run_id=spec.run_id,
            job=spec.job,
            version=spec.version,
            attempt=attempt,
            instance=instance.name,
            status=runs.SUCCEEDED,
            exit_code=0,
            message="",
            started=runs.now_iso(),
            finished=runs.now_iso(),
            phases={},
            provenance=runs.Provenance.of(spec, agent="bench"),
            results=bucket.url(runs.results_prefix(spec.run_id, attempt)),
        )
        runs.write_record(bucket, runs.attempt_key(spec.run_id, attempt, runs.ATTEMPT_RECORD), record)
        runs.write_record(bucket, runs.result_key(spec.run_id), runs.ResultRecord.of_attempt(record), immutable=True)
        url = f"{fake.endpoint}/compute/v1/projects/{PROJECT}/zones/{instance.zone}/instances/{instance.name}"
        with contextlib.suppress(urllib.error.HTTPError):  # the controller's delete may come first (404, 400)
            urllib.request.urlopen(urllib.request.Request(url, method="DELETE"), timeout=30).close()

    return play


def bench_release(fake: FakeCompute, bucket: FileBucket) -> Settings:
    """The test profile's settings against the fake, and a release of the sleep job published in
    `bucket` (its image the fake's, nothing built): what a benchmark's controller needs."""
    fake.add_image("mlbatch-bench", "unused:latest")
    config = repo_config()
    config["profile"] = "test"
    config["profiles"]["test"].update(bucket="gs://mlbatch-bench", compute_endpoint=fake.endpoint)
    settings = load_settings(config, ROOT)
    fake.ready_for_runs(settings.region, settings.network, settings.service_account)
    job = Job(name="sleep", container="trainer", command=("sleep",), params=(Param("seconds", "int", 1),))
    manifests.publish(
        bucket,
        manifests.Manifest(
            version=VERSION,
            git_sha="0" * 40,
            created=runs.now_iso(),
            profile="test",
            vm_image=manifests.VmImage("mlbatch-bench", fake.images["mlbatch-bench"]["selfLink"], "", VERSION),
            containers={"trainer": manifests.Container("trainer", "127.0.0.1:5000/trainer", "sha256:" + "0" * 64)},
            code=manifests.CodeBundle(f"{bucket.uri}/batch_code/{VERSION}/batch_code.tar.gz", "0" * 64, 1),
            jobs={"sleep": job},
        ),
    )
    return settings


def measure(runs_at_once: int, seconds: int) -> dict[str, float]:
    fake = FakeCompute(PROJECT, boot_containers=False).start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-bucket-") as root:
            bucket = CountingBucket(Path(root))
            settings = bench_release(fake, bucket)
            log_bytes: collections.Counter[str] = collections.Counter()
            fake.on_running = _guest(fake, bucket, seconds, log_bytes)
            before = dict(bucket.calls), bucket.bytes_up
            threads = []
            for _ in range(runs_at_once):
                controller = Controller(bucket, GceProvider(settings), lambda _: None, lambda _: None)
                request = RunRequest("sleep", VERSION, params=(f"seconds={seconds}",), timeout_seconds=seconds + 60)
                threads.append(threading.Thread(target=controller.run, args=(request,)))
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            run_minutes = runs_at_once * seconds / 60
            reads = bucket.calls["read"] - before[0].get("read", 0)
            uploads = bucket.bytes_up - before[1]
            compute = {m: n / run_minutes for m, n in sorted(fake.calls.items())}
            return {
                **{f"compute {m} / run-min": round(v, 1) for m, v in compute.items()},
                "compute calls / run-min": round(sum(compute.values()), 1),
                "bucket reads / run-min": round(reads / run_minutes, 1),
                "bucket bytes up / log byte": round(uploads / max(1, sum(log_bytes.values())), 3),
            }
    finally:
        fake.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0, help="length of each run's job")
    parser.add_argument("--runs", type=int, default=20, help="concurrent runs in the second measurement")
    args = parser.parse_args()
    seconds = int(args.minutes * 60)
    results: dict[int, dict[str, float]] = {}
    both = [threading.Thread(target=lambda n=n: results.__setitem__(n, measure(n, seconds))) for n in (1, args.runs)]
    with contextlib.redirect_stdout(io.StringIO()):  # the stand-in guests print their logs, as agents do
        for t in both:
            t.start()
        for t in both:
            t.join()
    alone, together = results[1], results[args.runs]
    width = max(len(k) for k in together)
    print(f"{'':{width}}  {'1 run':>10}  {f'{args.runs} runs':>10}   ({args.minutes:g}-minute job)")
    for key in together:
        print(f"{key:{width}}  {alone.get(key, 0):>10}  {together[key]:>10}")
    print(json.dumps({"alone": alone, "together": together}))


if __name__ == "__main__":
    main()
