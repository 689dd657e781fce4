"""`invoke run-batch --dry-run`: the plan of a run or a sweep, checked as the real one is
(release, job, params, timeout, key: mlbatch.run.controller.prepare, sweep.prepare_sweep),
then shown: the resolved release and params, the argv, the spec, and the body the provider
would be sent (a docker run locally, an instances.insert body, or the Cloud Batch job of a
sweep on gcp). Nothing is written to the bucket and nothing is created or asked of a cloud
API: not even the preflight (`invoke doctor` checks permissions)."""

from __future__ import annotations

from typing import Any

from mlbatch.core.bucket import open_bucket
from mlbatch.core.names import new_run_id
from mlbatch.core.settings import Settings
from mlbatch.run.deadlines import Margins
from mlbatch.run.launch import RunRequest, instance_request, prepare, run_spec
from mlbatch.run.sweep import SweepRequest, prepare_sweep, sweep_plan
from mlbatch.ui import columns


def plan_run(settings: Settings, request: RunRequest | SweepRequest) -> dict[str, Any]:
    bucket = open_bucket(settings.bucket)
    run_id = new_run_id(request.job)  # an example: the run gets its own when it starts
    if isinstance(request, SweepRequest):
        return _plan_sweep(settings, bucket, request, run_id)
    from mlbatch.providers import get_provider

    prepared = prepare(bucket, request)
    spec = run_spec(bucket, prepared, run_id, request.idempotency_key)
    provider = get_provider(settings)
    instance = instance_request(spec, prepared.job, 1, Margins())
    return {
        "dry_run": True,
        "kind": "run",
        "profile": settings.profile,
        "release": prepared.manifest.version,
        "job": prepared.job.name,
        "params": prepared.params,
        "argv": list(spec.argv),
        "timeout_seconds": spec.timeout_seconds,
        "run_id_example": run_id,
        "spec": spec.to_dict(),
        "instance": {
            "provider": provider.name,
            "zones": list(provider.zones),
            "spot": instance.spot,
            "machine_type": prepared.job.machine_type,
            "body": provider.describe(instance, provider.zones[0]),
        },
    }


def _plan_sweep(settings: Settings, bucket, request: SweepRequest, run_id: str) -> dict[str, Any]:
    sweep = prepare_sweep(bucket, request)
    job = sweep.prepared.job
    spec = run_spec(bucket, sweep.prepared, run_id, request.idempotency_key, sweep=True)
    plan = sweep_plan(sweep)
    data: dict[str, Any] = {
        "dry_run": True,
        "kind": "sweep",
        "profile": settings.profile,
        "release": sweep.prepared.manifest.version,
        "job": job.name,
        "parallelism": sweep.parallelism,
        "tasks": [{"task": i, "params": t.params, "argv": list(t.argv)} for i, t in enumerate(plan.tasks)],
        "timeout_seconds": spec.timeout_seconds,
        "run_id_example": run_id,
        "spec": {**spec.to_dict(), "sweep": plan.to_dict()},
    }
    if settings.is_local:
        from mlbatch.providers import get_provider

        provider = get_provider(settings)
        first = instance_request(spec, job, 1, Margins())
        data["instance"] = {"provider": provider.name, "per_task": True, "body": provider.describe(first, provider.zones[0])}
    else:
        from google.cloud import batch_v1

        from mlbatch.providers.batch import BatchJobs, job_id
        from mlbatch.run.sweep_batch import job_body

        body = job_body(BatchJobs(settings), spec, sweep, Margins())
        data["batch_job"] = {"name": job_id(run_id), "body": batch_v1.Job.to_dict(body)}
    return data


def render_plan(data: dict[str, Any]) -> str:
    """The plan for people: what would run, where, with what; the bodies in `--format json`."""
    rows = [
        ("release", data["release"]),
        ("job", data["job"]),
        ("profile", data["profile"]),
        ("timeout", f"{data['timeout_seconds']}s"),
    ]
    if data["kind"] == "run":
        rows.append(("params", " ".join(f"{k}={v}" for k, v in data["params"].items()) or "-"))
        rows.append(("argv", " ".join(data["argv"])))
        instance = data["instance"]
        where = f"{instance['provider']}: {instance['machine_type']}, {'spot' if instance['spot'] else 'on-demand'}"
        rows.append(("instance", f"{where}, zones {', '.join(instance['zones'])}"))
    else:
        rows.append(("tasks", f"{len(data['tasks'])}, at most {data['parallelism']} at once"))
        rows += [(f"task {t['task']}", " ".join(t["argv"])) for t in data["tasks"]]
        if "batch_job" in data:
            rows.append(("batch job", data["batch_job"]["name"] + " (one Cloud Batch job)"))
        else:
            rows.append(("instances", f"{data['instance']['provider']}: one per task"))
    rows += [("container", data["spec"]["container"]), ("vm image", data["spec"]["vm_image"]), ("code", data["spec"]["code_key"])]
    return (
        columns(("DRY RUN", "nothing was written or created"), rows)
        + "the instance or Batch job body: `--dry-run --format json`\n"
    )
