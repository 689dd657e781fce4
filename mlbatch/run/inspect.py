"""What ran, on which release, for how long, for how much, with what result: `invoke runs`
and `invoke runs.show`, read from the bucket's records after the instances are gone.

Both have a machine form (`--json`): the dicts built here. The people's form is rendered
by `mlbatch.run.inspect_render`; the dashboard (`mlbatch.dashboard`) renders the same dicts
as web pages.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from mlbatch.core import manifest as manifests
from mlbatch.core import options, runs, sweeps
from mlbatch.core.bucket import Bucket
from mlbatch.core.catalog import Job
from mlbatch.core.errors import BadInput, BadRecord, MlbatchError, NotFound
from mlbatch.core.sweeps import SweepPlan, SweepRecord, TaskRecord
from mlbatch.run.metrics import read_metrics
from mlbatch.run.prices import PriceTable
from mlbatch.run.ranking import rank
from mlbatch.run.records import list_runs as base_rows
from mlbatch.run.sweep import read_metrics as read_task_metrics
from mlbatch.run.sweep import read_task_attempt

RUNNING = "running"  # a run (or a sweep's task) without its end record yet
STATUSES = (RUNNING, runs.SUCCEEDED, runs.FAILED, *runs.STATUS_EXIT_CODES)
LOCAL_ZONE = "local"  # the zone the local provider records: priced in the price table's local_region
COST_NOTE = "list prices of the machine, no disks, network or discounts"
SWEEP_COST_NOTE = (
    "a sweep: each task's last attempt from its agent's start to its end (one-minute minimum), as the job's "
    "machine type in the profile's region; boot and earlier preempted attempts are not recorded, so not counted"
)


def _time(text: str) -> dt.datetime | None:
    try:
        value = dt.datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _seconds(start: str, end: str) -> float | None:
    a, b = _time(start), _time(end)
    return round((b - a).total_seconds(), 3) if a and b else None


def parse_since(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """`30m`, `24h`, `7d`, or an ISO date/time (UTC unless it says otherwise)."""
    return options.since(text, "--since", now)


def read_run_metrics(bucket: Bucket, result: runs.ResultRecord | None) -> dict[str, Any]:
    """The metrics of the results the run's record names (the attempt that ended it)."""
    if result is None or not result.results:
        return {}
    return read_metrics(bucket, runs.results_of(bucket, result))


def read_sweep(bucket: Bucket, run_id: str) -> SweepRecord | None:
    """sweep.json of an ended sweep; None for a single run or a sweep still running."""
    return runs.read_record(bucket, sweeps.sweep_key(run_id), SweepRecord)


def metric_value(metrics: dict[str, Any], metric: str) -> float | None:
    value = metrics.get(metric) if metric else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def best_task(tasks: list[TaskRecord] | tuple[TaskRecord, ...], ranking: tuple[int, ...], metric: str) -> TaskRecord | None:
    """The first of the ranking that succeeded with a value of the metric (`ranking.rank`'s order)."""
    by_index = {t.index: t for t in tasks}
    for index in ranking:
        task = by_index.get(index)
        if task and task.status == runs.SUCCEEDED and metric_value(task.metrics, metric) is not None:
            return task
    return None


# --- the list ------------------------------------------------------------------------------


def _sweep_row(bucket: Bucket, run_id: str, result: runs.ResultRecord | None) -> dict[str, Any] | None:
    """A sweep's line in the list: its task counts and its best task (None for a single run)."""
    if result is not None and not result.sweep:
        return None  # an ended single run (a sweep's result names its sweep.json)
    record = read_sweep(bucket, run_id) if result is not None else None
    if record is None:
        plan = sweeps.read_plan(bucket, run_id)
        return {"tasks": len(plan.tasks), "succeeded": None, "best_task": None, "metric": ""} if plan else None
    best = best_task(record.tasks, record.ranking, record.metric)
    return {
        "tasks": len(record.tasks),
        "succeeded": sum(1 for t in record.tasks if t.status == runs.SUCCEEDED),
        "best_task": best.index if best else None,
        "metric": record.metric,
        "best_metrics": dict(best.metrics) if best else {},
    }


def list_runs(
    bucket: Bucket, job: str | None = None, status: str | None = None, since: str | None = None
) -> list[dict[str, Any]]:
    """Runs oldest first, filtered; each with its duration and metrics (a sweep's: its best task's)."""
    if status is not None and status not in STATUSES:
        raise BadInput(f"invalid --status {status!r}: expected one of {', '.join(STATUSES)}")
    after = parse_since(since) if since else None
    out = []
    for row in base_rows(bucket, job):
        if status is not None and row.status != status:
            continue
        created = _time(row.created)
        if after is not None and (created is None or created < after):
            continue
        result = runs.read_result(bucket, row.run_id) if row.status != RUNNING else None
        sweep = _sweep_row(bucket, row.run_id, result)
        metrics = sweep.pop("best_metrics", {}) if sweep else read_run_metrics(bucket, result)
        out.append(
            {
                "run_id": row.run_id,
                "job": row.job,
                "version": row.version,
                "created": row.created,
                "status": row.status,
                "exit_code": None if row.exit_code == "-" else int(row.exit_code),
                "seconds": _seconds(row.created, result.finished) if result else None,
                "metrics": metrics,
                "sweep": sweep,
            }
        )
    return out


# --- one run -------------------------------------------------------------------------------


def _region(zone: str, prices: PriceTable) -> str:
    return str(prices.data.get("local_region", "")) if zone == LOCAL_ZONE else zone.rsplit("-", 1)[0]


def _attempt(bucket: Bucket, run_id: str, n: int, prices: PriceTable, now: str) -> dict[str, Any]:
    made = runs.read_instance(bucket, run_id, n)
    ended = runs.read_attempt(bucket, run_id, n)
    phases: dict[str, float] = {}
    view: dict[str, Any] = {"attempt": n, "status": ended.status if ended else RUNNING}
    if ended:
        view.update(exit_code=ended.exit_code, started=ended.started, finished=ended.finished, message=ended.message)
        phases.update(ended.phases)
    if made:
        view.update(
            instance=made.instance,
            zone=made.zone,
            provisioning="spot" if made.spot else "on-demand",
            machine_type=made.machine_type,
            gpus=f"{made.gpu_count} x {made.gpu_type}" if made.gpu_count else "",
            created=made.created,
            deleted=made.deleted,
            detached=made.detached,
        )
        phases.update(made.phases)
        if ended and (boot := _seconds(made.created, ended.started)) is not None:
            phases["boot"] = max(0.0, boot)
        # Billed from creation to deletion; a self-deleting instance ends soon after its agent.
        seconds = _seconds(made.created, made.deleted or (ended.finished if ended else now))
        region = _region(made.zone, prices)
        hourly = prices.hourly(made.machine_type, made.spot, region, made.gpu_type, made.gpu_count)
        view.update(
            seconds=seconds,
            priced_as=f"{made.machine_type} {view['provisioning']} in {region}",
            cost_usd=round(prices.cost(hourly, seconds or 0.0), 6) if hourly is not None else None,
        )
    view["phases"] = dict(runs.phases_in_order(phases))
    return view


def _task(
    bucket: Bucket, run_id: str, task: TaskRecord, metric: str, pricing: tuple[PriceTable, Job | None, str]
) -> dict[str, Any]:
    """One task of a sweep: its params, how it ended, its metric, where its results are, what it cost."""
    prices, job, region = pricing
    record = read_task_attempt(bucket, run_id, task.index)
    view: dict[str, Any] = {
        "task": task.index,
        "params": task.params,
        "status": task.status,
        "exit_code": task.exit_code if task.exit_code != -1 else None,
        "attempts": task.attempts,
        "message": task.message,
        "metrics": task.metrics,
        "metric": metric_value(task.metrics, metric),
        "results": bucket.url(sweeps.task_attempt_key(run_id, task.index, max(task.attempts, 1), "results")),
        "started": record.started if record else "",
        "finished": record.finished if record else "",
        "seconds": _seconds(record.started, record.finished) if record else None,
        "phases": dict(runs.phases_in_order(record.phases)) if record else {},
        "agent": record.provenance.agent if record else "",
        "cost_usd": None,
    }
    if record and job and region and view["seconds"] is not None:
        hourly = prices.hourly(job.machine_type, job.spot, region, job.gpu_type, job.gpu_count)
        view["cost_usd"] = round(prices.cost(hourly, view["seconds"]), 6) if hourly is not None else None
    return view


def _running_tasks(bucket: Bucket, run_id: str, plan: SweepPlan) -> list[TaskRecord]:
    """A sweep that has not ended yet: each planned task as far as its agent recorded it."""
    tasks = []
    for i, planned in enumerate(plan.tasks):
        task = TaskRecord(index=i, params=planned.params, status=RUNNING)
        if (record := read_task_attempt(bucket, run_id, i)) is not None:
            task.ended(record.status, record.exit_code, record.attempt, record.message)
            task.metrics = read_task_metrics(bucket, run_id, i, record.attempt)
        tasks.append(task)
    return tasks


def _sweep(
    bucket: Bucket, spec: runs.RunSpec, plan: SweepPlan, job: Job | None, manifest_profile: str, prices: PriceTable, region: str
) -> dict[str, Any]:
    """The sweep part of `show`: every task, the best one, and the tasks' cost."""
    record = read_sweep(bucket, spec.run_id)
    if record is not None:
        tasks, ranking, metric, goal = list(record.tasks), record.ranking, record.metric, record.metric_goal
    else:
        tasks = _running_tasks(bucket, spec.run_id, plan)
        ranking = tuple(t.index for t in rank(tasks, job)) if job else tuple(t.index for t in tasks)
        metric, goal = (job.metric, job.metric_goal) if job else ("", "max")
    # Tasks run on instances of the release's kind: a local release's on this machine (priced as
    # the table's local_region), a gcp release's on Cloud Batch VMs in the profile's region.
    task_region = _region(LOCAL_ZONE, prices) if manifest_profile == "local" else region
    views = [_task(bucket, spec.run_id, t, metric, (prices, job, task_region)) for t in tasks]
    best = best_task(tasks, ranking, metric)
    first = plan.tasks[0].params if plan.tasks else {}
    shared = {k: v for k, v in first.items() if all(t.params.get(k) == v for t in plan.tasks)}
    priced = [v["cost_usd"] for v in views if v["cost_usd"] is not None]
    return {
        "metric": metric,
        "metric_goal": goal,
        "parallelism": plan.parallelism,
        "swept": [k for k in first if k not in shared],
        "shared_params": shared,
        "tasks": views,
        "ranking": list(ranking),
        "best_task": best.index if best else None,
        "summary": bucket.url(sweeps.summary_key(spec.run_id)) if record is not None else "",
        "priced_as": f"{job.machine_type} {'spot' if job.spot else 'on-demand'} in {task_region or '?'}" if job else "",
        "cost_usd": round(sum(priced), 6),
        "priced_tasks": len(priced),
    }


def show(bucket: Bucket, run_id: str, prices: PriceTable, region: str = "") -> dict[str, Any]:
    """Everything the records say about one run (a sweep: every task), and its estimated cost.

    `region` prices a gcp sweep's Batch VMs (their records name no zone): the profile's region."""
    spec = runs.read_spec(bucket, run_id)
    if spec is None:
        raise NotFound(f"run {run_id} does not exist in {bucket.uri} (see `invoke runs`)")
    result = runs.read_result(bucket, run_id)
    now = runs.now_iso()
    attempts = [_attempt(bucket, run_id, n, prices, now) for n in runs.attempt_numbers(bucket, run_id)]
    try:
        manifest = manifests.load(bucket, spec.version)
        git_sha, containers = manifest.git_sha, {name: c.ref for name, c in manifest.containers.items()}
        job, manifest_profile = manifest.jobs.get(spec.job), manifest.profile
    except MlbatchError:
        git_sha, containers, job, manifest_profile = "", {}, None, ""
    try:
        plan = sweeps.read_plan(bucket, run_id)
    except BadRecord:
        plan = None
    sweep = _sweep(bucket, spec, plan, job, manifest_profile, prices, region) if plan else None
    agent = next(
        (a for a in (runs.read_attempt(bucket, run_id, n) for n in reversed(runs.attempt_numbers(bucket, run_id))) if a), None
    )
    task_agents = (t["agent"] for t in (sweep["tasks"] if sweep else []) if t["agent"])
    agent_version = agent.provenance.agent if agent else next(task_agents, "")
    costs = [a["cost_usd"] for a in attempts if "cost_usd" in a]
    if sweep is not None:
        estimated: float | None = sweep["cost_usd"]
    else:
        estimated = round(sum(c for c in costs if c is not None), 6) if costs and None not in costs else None
    return {
        "run_id": run_id,
        "job": spec.job,
        "status": result.status if result else RUNNING,
        "exit_code": result.run_exit_code if result else None,
        "message": result.message if result else "",
        "recorded_by": result.recorded_by if result else "",
        "created": spec.created,
        "finished": result.finished if result else "",
        "seconds": _seconds(spec.created, result.finished) if result else None,
        "spec": {
            "version": spec.version,
            "argv": list(spec.argv),
            "params": spec.params,
            "timeout_seconds": spec.timeout_seconds,
            "idempotency_key": spec.idempotency_key,
        },
        "provenance": {
            "release": spec.version,
            "git_sha": git_sha,
            "vm_image": spec.vm_image,
            "container": spec.container,
            "release_containers": containers,
            "code": spec.code_key,
            "code_sha256": spec.code_sha256,
            "agent": agent_version,
        },
        "attempts": attempts,
        "sweep": sweep,
        "metrics": read_run_metrics(bucket, result),
        "results": bucket.url(f"{runs.run_prefix(run_id)}/tasks") if sweep else result.results if result else "",
        "cost": {
            "estimated_usd": estimated,
            "price_table": prices.origin,
            "prices": prices.source,
            "note": f"{COST_NOTE}; {SWEEP_COST_NOTE}" if sweep else COST_NOTE,
        },
    }
