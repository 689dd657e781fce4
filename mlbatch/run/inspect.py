"""What ran, on which release, for how long, for how much, with what result: `invoke runs`
and `invoke runs.show`, read from the bucket's records after the instances are gone.

Both have a machine form (`--json`): the dicts built here. The people's form is rendered
by `render_list` and `render_show`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from rich.console import Group

from mlbatch.core import manifest as manifests
from mlbatch.core import options, runs
from mlbatch.core.bucket import Bucket
from mlbatch.core.errors import BadInput, MlbatchError, NotFound
from mlbatch.run.metrics import read_metrics
from mlbatch.run.prices import PriceTable
from mlbatch.run.records import list_runs as base_rows
from mlbatch.ui import columns, summary

RUNNING = "running"  # a run without result.json yet
STATUSES = (RUNNING, runs.SUCCEEDED, runs.FAILED, *runs.STATUS_EXIT_CODES)


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


def read_run_metrics(bucket: Bucket, run_id: str) -> dict[str, Any]:
    return read_metrics(bucket, runs.results_prefix(run_id))


# --- the list ------------------------------------------------------------------------------


def list_runs(
    bucket: Bucket, job: str | None = None, status: str | None = None, since: str | None = None
) -> list[dict[str, Any]]:
    """Runs oldest first, filtered; each with its duration and metrics."""
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
        out.append(
            {
                "run_id": row.run_id,
                "job": row.job,
                "version": row.version,
                "created": row.created,
                "status": row.status,
                "exit_code": None if row.exit_code == "-" else int(row.exit_code),
                "seconds": _seconds(row.created, result.finished) if result else None,
                "metrics": read_run_metrics(bucket, row.run_id) if result else {},
            }
        )
    return out


def _metrics_text(metrics: dict[str, Any], limit: int = 60) -> str:
    text = " ".join(f"{k}={round(v, 4) if isinstance(v, float) else v}" for k, v in metrics.items())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_list(rows: list[dict[str, Any]]) -> str:
    """Aligned columns with a header, one run a line (greppable; --format json for machines)."""
    lines = []
    for r in rows:
        seconds = f"{r['seconds']:.0f}s" if r["seconds"] is not None else "-"
        exit_code = "-" if r["exit_code"] is None else str(r["exit_code"])
        lines.append((r["run_id"], r["version"], r["created"][:19], r["status"], exit_code, seconds, _metrics_text(r["metrics"])))
    return columns(("RUN", "VERSION", "CREATED", "STATUS", "EXIT", "TIME", "METRICS"), lines)


# --- one run -------------------------------------------------------------------------------


def _region(zone: str, prices: PriceTable) -> str:
    return str(prices.data.get("local_region", "")) if zone == "local" else zone.rsplit("-", 1)[0]


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


def show(bucket: Bucket, run_id: str, prices: PriceTable) -> dict[str, Any]:
    """Everything the records say about one run, and its estimated cost."""
    spec = runs.read_spec(bucket, run_id)
    if spec is None:
        raise NotFound(f"run {run_id} does not exist in {bucket.uri} (see `invoke runs`)")
    result = runs.read_result(bucket, run_id)
    now = runs.now_iso()
    attempts = [_attempt(bucket, run_id, n, prices, now) for n in runs.attempt_numbers(bucket, run_id)]
    try:
        manifest = manifests.load(bucket, spec.version)
        git_sha, containers = manifest.git_sha, {name: c.ref for name, c in manifest.containers.items()}
    except MlbatchError:
        git_sha, containers = "", {}
    agent = next(
        (a for a in (runs.read_attempt(bucket, run_id, n) for n in reversed(runs.attempt_numbers(bucket, run_id))) if a), None
    )
    costs = [a["cost_usd"] for a in attempts if "cost_usd" in a]
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
            "agent": agent.provenance.agent if agent else "",
        },
        "attempts": attempts,
        "metrics": read_run_metrics(bucket, run_id),
        "results": bucket.url(runs.results_prefix(run_id)),
        "cost": {
            "estimated_usd": round(sum(c for c in costs if c is not None), 6) if costs and None not in costs else None,
            "price_table": prices.origin,
            "prices": prices.source,
            "note": "list prices of the machine, no disks, network or discounts",
        },
    }


def render_show(view: dict[str, Any]) -> Group:
    s, p, c = view["spec"], view["provenance"], view["cost"]
    took = f"{view['seconds']:.1f}s" if view["seconds"] is not None else "-"
    ended = f"{view['status']} (exit code {view['exit_code']})" if view["exit_code"] is not None else view["status"]
    head = [
        ("job", view["job"]),
        ("ended", ended + (f": {view['message']}" if view["message"] else "")),
        ("created", view["created"]),
        ("took", took),
        ("params", " ".join(f"{k}={v}" for k, v in s["params"].items()) or "-"),
        ("argv", " ".join(s["argv"])),
        ("timeout", f"{s['timeout_seconds']}s"),
    ]
    if s["idempotency_key"]:
        head.append(("trigger key", s["idempotency_key"]))
    usd = c["estimated_usd"]
    head.append(("est. cost", f"${usd:.4f}" if usd is not None else "unknown (machine type or region not in the price table)"))
    head.append(("results", view["results"]))
    provenance = [
        ("release", p["release"] + (f" (git {p['git_sha'][:12]})" if p["git_sha"] else "")),
        ("vm image", p["vm_image"]),
        ("container", p["container"]),
        ("code", f"{p['code']} sha256:{p['code_sha256'][:16]}…"),
        ("agent", p["agent"] or "-"),
    ]
    attempts = []
    for a in view["attempts"]:
        exit_code = f" (exit code {a['exit_code']})" if a.get("exit_code", -1) not in (-1, None) else ""
        where = f"{a.get('zone', '?')}, {a.get('provisioning', '?')}, {a.get('machine_type', '?')}" + (
            f", {a['gpus']}" if a.get("gpus") else ""
        )
        rows = [("instance", a.get("instance", "?") + (" (detached)" if a.get("detached") else "")), ("where", where)]
        rows.append(("ended", a["status"] + exit_code + (f": {a['message']}" if a.get("message") else "")))
        rows.append(("phases", " · ".join(f"{p} {s:.1f}s" for p, s in runs.phases_in_order(a["phases"])) or "-"))
        if a.get("seconds") is not None:
            cost = (
                f"${a['cost_usd']:.4f} as {a['priced_as']}"
                if a.get("cost_usd") is not None
                else f"not in the price table ({a['priced_as']})"
            )
            rows.append(("billed", f"{a['seconds']:.1f}s, {cost}"))
        attempts.append(summary(f"attempt {a['attempt']}", rows))
    parts: list[Any] = [summary(f"run {view['run_id']}", head), summary("provenance", provenance), *attempts]
    if view["metrics"]:
        parts.append(summary("metrics", [(k, str(v)) for k, v in view["metrics"].items()]))
    parts.append(f"cost: {c['note']}; prices: {c['prices']}")
    return Group(*parts)
