"""`invoke runs.cost --since 7d`: what runs and sweeps cost, per job, machine type and Spot
against on-demand, from the same records and prices as `runs.show` (mlbatch.run.inspect's
cost of each attempt, and of each task of a sweep where inspect prices them; the table of
mlbatch/run/prices.py). For a Spot row it also says what the same hours would have cost
on-demand: the saving Spot bought, or would have."""

from __future__ import annotations

from typing import Any

from mlbatch.core import manifest as manifests
from mlbatch.core import options, runs
from mlbatch.core.bucket import Bucket
from mlbatch.core.errors import MlbatchError
from mlbatch.core.names import check_job_name
from mlbatch.run import inspect
from mlbatch.run.prices import PriceTable
from mlbatch.ui import columns

NOTE = "list prices of the machine (instance lifetime, one-minute minimum), no disks, network or discounts"


def _item(job: str, machine_type: str, spot: bool, seconds: float | None, cost: float | None, on_demand: float | None) -> dict:
    return {"job": job, "machine_type": machine_type, "spot": spot, "seconds": seconds, "cost": cost, "on_demand": on_demand}


def _attempt_items(bucket: Bucket, run_id: str, job: str, view: dict[str, Any], prices: PriceTable) -> list[dict]:
    items = []
    for a in view["attempts"]:
        if "machine_type" not in a or a.get("seconds") is None:
            continue  # no instance record (yet): nothing billed that the records show
        made = runs.read_instance(bucket, run_id, a["attempt"])
        region = inspect._region(a["zone"], prices)
        gpu = (made.gpu_type, made.gpu_count) if made else ("", 0)
        hourly = prices.hourly(a["machine_type"], False, region, *gpu)
        on_demand = round(prices.cost(hourly, a["seconds"]), 6) if hourly is not None else None
        items.append(_item(job, a["machine_type"], a["provisioning"] == "spot", a["seconds"], a.get("cost_usd"), on_demand))
    return items


def _task_items(bucket: Bucket, job: str, view: dict[str, Any], prices: PriceTable, region: str) -> list[dict]:
    """A sweep's tasks, as inspect prices them (the job's machine type, Spot or not)."""
    sweep = view.get("sweep")
    if not sweep:
        return []
    try:
        manifest = manifests.load(bucket, view["spec"]["version"])
        spec = manifest.jobs[job]
    except (MlbatchError, KeyError):
        return []
    task_region = inspect._region("local", prices) if manifest.profile == "local" else region
    hourly = prices.hourly(spec.machine_type, False, task_region, spec.gpu_type, spec.gpu_count)
    return [
        _item(
            job,
            spec.machine_type,
            spec.spot,
            t["seconds"],
            t["cost_usd"],
            round(prices.cost(hourly, t["seconds"]), 6) if hourly is not None else None,
        )
        for t in sweep["tasks"]
        if t.get("seconds") is not None
    ]


def cost_report(bucket: Bucket, prices: PriceTable, since: str = "7d", job: str | None = None, region: str = "") -> dict:
    """Runs created since `since`, their instances' cost grouped by job, machine type and Spot."""
    after = options.since(since)
    if job:
        check_job_name(job)
    groups: dict[tuple[str, str, bool], dict[str, Any]] = {}
    counted = 0
    for run_id in runs.list_run_ids(bucket, job):
        spec = runs.read_spec(bucket, run_id)
        created = inspect._time(spec.created) if spec else None
        if spec is None or created is None or created < after:
            continue
        counted += 1
        view = inspect.show(bucket, run_id, prices, region)
        for item in _attempt_items(bucket, run_id, spec.job, view, prices) + _task_items(bucket, spec.job, view, prices, region):
            group = groups.setdefault(
                (item["job"], item["machine_type"], item["spot"]),
                {"job": item["job"], "machine_type": item["machine_type"], "spot": item["spot"], "runs": set(), "instances": 0,
                 "seconds": 0.0, "cost_usd": 0.0, "on_demand_usd": 0.0, "unpriced": 0},
            )  # fmt: skip
            group["runs"].add(run_id)
            group["instances"] += 1
            group["seconds"] += item["seconds"]
            if item["cost"] is None or item["on_demand"] is None:
                group["unpriced"] += 1
            else:
                group["cost_usd"] += item["cost"]
                group["on_demand_usd"] += item["on_demand"]
    rows = []
    for group in sorted(groups.values(), key=lambda g: (g["job"], g["machine_type"], not g["spot"])):
        rows.append(
            {**group, "runs": len(group["runs"]), "cost_usd": round(group["cost_usd"], 6),
             "on_demand_usd": round(group["on_demand_usd"], 6), "seconds": round(group["seconds"], 3)}
        )  # fmt: skip
    return {
        "since": after.isoformat(timespec="seconds"),
        "runs": counted,
        "rows": rows,
        "total_usd": round(sum(r["cost_usd"] for r in rows), 6),
        "on_demand_usd": round(sum(r["on_demand_usd"] for r in rows), 6),
        "prices": prices.source,
        "note": NOTE,
    }


def render_report(report: dict[str, Any]) -> str:
    lines = [
        (
            r["job"],
            r["machine_type"],
            "spot" if r["spot"] else "on-demand",
            str(r["runs"]),
            f"{r['seconds'] / 3600:.2f}",
            f"${r['cost_usd']:.4f}" + (f" (+{r['unpriced']} unpriced)" if r["unpriced"] else ""),
            f"${r['on_demand_usd']:.4f}",
        )
        for r in report["rows"]
    ]
    table = columns(("JOB", "MACHINE", "VM", "RUNS", "HOURS", "COST", "ON-DEMAND"), lines, leave_out=("HOURS", "ON-DEMAND"))
    total = report["total_usd"]
    saved = report["on_demand_usd"] - total
    return (
        table
        + f"{report['runs']} run(s) since {report['since']}: ${total:.4f}"
        + (f" (${saved:.4f} less than on-demand)" if saved > 0 else "")
        + f"\ncost: {report['note']}; prices: {report['prices']}\n"
    )
