"""The job catalog (`batch_code/jobs.yaml`) and the validation of run parameters."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from mlbatch.core.access import GoogleAccess, parse_google_access
from mlbatch.core.errors import BadInput
from mlbatch.core.names import GCE_NAME, check_job_name
from mlbatch.core.text import has_control_characters

PARAM_TYPES = {"int": int, "float": float, "str": str, "bool": bool}
# Params never pass through a shell, but values also land in labels, logs and argv of
# scripts written by others: string params are held to a plain pattern unless a job
# declares its own.
DEFAULT_STR_PATTERN = r"[A-Za-z0-9._,:/@+=-]{0,256}"
_PARAM_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_MACHINE_TYPE = re.compile(r"^[a-z0-9]+-[a-z0-9-]+$")
MAX_TIMEOUT = 7 * 24 * 3600  # seconds: the longest a job may run, in the catalog and as --timeout
# What a trigger does while a run of the same job is still going (see mlbatch.run.overlap).
CONCURRENCY = ("allow", "skip", "wait")


@dataclasses.dataclass(frozen=True)
class Param:
    name: str
    type: str
    default: Any
    help: str = ""
    pattern: str = DEFAULT_STR_PATTERN
    choices: tuple[Any, ...] = ()

    def parse(self, job: str, raw: str) -> Any:
        where = f"param {self.name}={raw!r} of job {job}"
        try:
            if self.type == "bool":
                if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                value: Any = raw.lower() in ("true", "1", "yes")
            else:
                value = PARAM_TYPES[self.type](raw)
        except ValueError:
            raise BadInput(f"invalid {where}: expected a {self.type}") from None
        if self.type == "float" and not math.isfinite(value):
            raise BadInput(f"invalid {where}: expected a finite float such as 0.25 or 1e-3 (not nan or inf)")
        # Whatever a job's own pattern admits: a control character would land in spec.json,
        # logs, argv of scripts written by others and the operator's terminal.
        if self.type == "str" and has_control_characters(value):
            raise BadInput(f"invalid {where}: expected text with no control character (newline, tab, escape)")
        if self.type == "str" and not re.fullmatch(self.pattern, value):
            raise BadInput(f"invalid {where}: expected a value matching {self.pattern}")
        if self.choices and value not in self.choices:
            raise BadInput(f"invalid {where}: expected one of {', '.join(map(str, self.choices))}")
        return value


@dataclasses.dataclass(frozen=True)
class Job:
    name: str
    container: str
    command: tuple[str, ...]
    description: str = ""
    machine_type: str = "e2-standard-4"
    spot: bool = False
    max_preemption_retries: int = 2
    on_demand_after_preemptions: int = 0  # 0: stay on Spot; K: attempts after K preemptions run on-demand
    timeout_seconds: int = 3600
    gpu_type: str = ""
    gpu_count: int = 0
    params: tuple[Param, ...] = ()
    concurrency: str = "allow"  # allow | skip | wait, while a run of this job is still going
    # Sweeps rank their tasks by this key of the results' metrics.json, best first.
    metric: str = ""
    metric_goal: str = "max"  # max | min
    max_log_mb: int = 0  # 0: the whole log is kept; N: the first N MB, and the log's last line says what was cut
    # The job container's network: none unless the job asks (true) or declares google_access.
    network: bool = False
    # Object prefixes the job's container may read and write with a downscoped token; none: no credentials.
    google_access: GoogleAccess = GoogleAccess()

    def resolve_params(self, given: Mapping[str, str]) -> dict[str, Any]:
        """Validate `--param k=v` values against the catalog; return all params with defaults."""
        known = {p.name: p for p in self.params}
        unknown = sorted(set(given) - set(known))
        if unknown:
            expected = ", ".join(known) or "none"
            raise BadInput(f"unknown param {unknown[0]!r} for job {self.name}: expected one of: {expected}")
        for name, p in known.items():  # a release made before floats had to be finite may carry one
            if name not in given and isinstance(p.default, float) and not math.isfinite(p.default):
                raise BadInput(
                    f"param {name} of job {self.name}: the release's default {p.default} is not usable: "
                    f"expected a finite float; give --param {name}=VALUE"
                )
        return {name: (p.parse(self.name, given[name]) if name in given else p.default) for name, p in known.items()}

    def argv(self, params: Mapping[str, Any]) -> list[str]:
        """The job's command with params appended as --name=value arguments (never a shell)."""
        args = [f"--{k.replace('_', '-')}={str(v).lower() if isinstance(v, bool) else v}" for k, v in params.items()]
        return [*self.command, *args]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parse_params(pairs: Iterable[str]) -> dict[str, str]:
    """`["k=v", ...]` from the command line into a dict; malformed pairs are refused."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not _PARAM_NAME.fullmatch(key):
            raise BadInput(f"invalid --param {pair!r}: expected name=value with a name like n_estimators")
        if key in out:
            raise BadInput(f"--param {key} given twice")
        out[key] = value
    return out


def _fail(job: str, message: str) -> BadInput:
    return BadInput(f"jobs.yaml: job {job!r}: {message}")


def _param(job: str, name: str, spec: Mapping[str, Any]) -> Param:
    if not _PARAM_NAME.fullmatch(name):
        raise _fail(job, f"invalid param name {name!r}: expected [a-z][a-z0-9_]*")
    unknown_keys = set(spec) - {"type", "default", "help", "pattern", "choices"}
    if unknown_keys:
        raise _fail(job, f"param {name}: unknown keys {sorted(unknown_keys)}")
    type_name = spec.get("type", "str")
    if type_name not in PARAM_TYPES:
        raise _fail(job, f"param {name}: type {type_name!r} is not one of {', '.join(PARAM_TYPES)}")
    pattern = str(spec.get("pattern", DEFAULT_STR_PATTERN))
    try:
        re.compile(pattern)
    except re.error as exc:
        raise _fail(job, f"param {name}: pattern {pattern!r} is not a regular expression ({exc})") from None
    param = Param(
        name=name,
        type=type_name,
        default=spec.get("default"),
        help=str(spec.get("help", "")),
        pattern=pattern,
        choices=tuple(spec.get("choices", ())),
    )
    if param.default is not None:
        param.parse(job, str(param.default).lower() if type_name == "bool" else str(param.default))
    return param


def _flag(job: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(job, f"{key} {value!r} must be true or false")
    return value


def _job(name: str, spec: Mapping[str, Any], containers: set[str] | None) -> Job:
    try:
        check_job_name(name)
    except BadInput as exc:
        raise BadInput(f"jobs.yaml: {exc}") from None
    if not isinstance(spec, Mapping):
        raise _fail(name, "expected a mapping")
    allowed = {f.name for f in dataclasses.fields(Job)} - {"name", "gpu_type", "gpu_count"} | {"gpu"}
    unknown_keys = set(spec) - allowed
    if unknown_keys:
        raise _fail(name, f"unknown keys {sorted(unknown_keys)}; expected some of {sorted(allowed)}")
    command = spec.get("command")
    if not isinstance(command, list) or not command or not all(isinstance(a, str) and a for a in command):
        raise _fail(name, "command must be a non-empty list of strings (an argv list, never a shell string)")
    container = spec.get("container")
    if not isinstance(container, str) or not GCE_NAME.fullmatch(container):
        raise _fail(name, f"container {container!r} is not a valid container name")
    if containers is not None and container not in containers:
        raise _fail(name, f"container {container!r} is not one of containers/: {', '.join(sorted(containers))}")
    timeout = spec.get("timeout_seconds", 3600)
    if not isinstance(timeout, int) or not 10 <= timeout <= MAX_TIMEOUT:
        raise _fail(name, f"timeout_seconds {timeout!r} must be an integer from 10 to {MAX_TIMEOUT}")
    retries = spec.get("max_preemption_retries", 2)
    if not isinstance(retries, int) or not 0 <= retries <= 10:
        raise _fail(name, f"max_preemption_retries {retries!r} must be an integer from 0 to 10")
    fallback = spec.get("on_demand_after_preemptions", 0)
    if not isinstance(fallback, int) or not 0 <= fallback <= 10:
        raise _fail(name, f"on_demand_after_preemptions {fallback!r} must be an integer from 0 to 10")
    machine_type = spec.get("machine_type", "e2-standard-4")
    if not isinstance(machine_type, str) or not _MACHINE_TYPE.match(machine_type):
        raise _fail(name, f"machine_type {machine_type!r} is not a machine type, e.g. n2-standard-8")
    gpu = spec.get("gpu") or {}
    if gpu and (not isinstance(gpu.get("type"), str) or not isinstance(gpu.get("count", 1), int)):
        raise _fail(name, "gpu must be {type: nvidia-..., count: N}")
    concurrency = spec.get("concurrency", "allow")
    if concurrency not in CONCURRENCY:
        raise _fail(name, f"concurrency {concurrency!r} must be one of {', '.join(CONCURRENCY)}")
    metric = spec.get("metric", "")
    if not isinstance(metric, str) or (metric and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}", metric)):
        raise _fail(name, f"metric {metric!r} must be a key of the job's metrics.json, e.g. accuracy")
    metric_goal = spec.get("metric_goal", "max")
    if metric_goal not in ("max", "min"):
        raise _fail(name, f"metric_goal {metric_goal!r} must be max or min")
    max_log_mb = spec.get("max_log_mb", 0)
    if not isinstance(max_log_mb, int) or isinstance(max_log_mb, bool) or not 0 <= max_log_mb <= 1_000_000:
        raise _fail(name, f"max_log_mb {max_log_mb!r} must be an integer from 0 (no cap) to 1000000")
    params = spec.get("params") or {}
    if not isinstance(params, Mapping):
        raise _fail(name, "params must be a mapping of name -> {type, default, help}")
    return Job(
        name=name,
        container=container,
        command=tuple(command),
        description=str(spec.get("description", "")),
        machine_type=machine_type,
        spot=bool(spec.get("spot", False)),
        max_preemption_retries=retries,
        on_demand_after_preemptions=fallback,
        timeout_seconds=timeout,
        gpu_type=str(gpu.get("type", "")),
        gpu_count=int(gpu.get("count", 1)) if gpu else 0,
        params=tuple(_param(name, k, v or {}) for k, v in params.items()),
        concurrency=concurrency,
        metric=metric,
        metric_goal=metric_goal,
        max_log_mb=max_log_mb,
        network=_flag(name, "network", spec.get("network", False)),
        google_access=parse_google_access(name, spec.get("google_access")),
    )


def parse_catalog(text: str, containers: set[str] | None = None) -> dict[str, Job]:
    """Parse and validate jobs.yaml; `containers` (when known) are the names jobs may use."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise BadInput(f"jobs.yaml is not valid YAML: {exc}") from None
    jobs = data.get("jobs") if isinstance(data, Mapping) else None
    if not isinstance(jobs, Mapping) or not jobs:
        raise BadInput("jobs.yaml: expected a top-level 'jobs:' mapping with at least one job")
    return {name: _job(name, spec, containers) for name, spec in jobs.items()}


def container_names(containers_dir: Path) -> list[str]:
    """The containers a checkout builds: the folders of containers/ with a Dockerfile."""
    return sorted(p.parent.name for p in containers_dir.glob("*/Dockerfile"))


def checkout_catalog(root: Path) -> dict[str, Job]:
    """The catalog of a checkout: batch_code/jobs.yaml, its jobs' containers among containers/."""
    text = (root / "batch_code" / "jobs.yaml").read_text()
    return parse_catalog(text, containers=set(container_names(root / "containers")))


def job_from_dict(data: Mapping[str, Any]) -> Job:
    """Rebuild a Job from its manifest form (already validated at release time)."""
    fields = dict(data)
    fields["command"] = tuple(fields["command"])
    fields["params"] = tuple(Param(**{**p, "choices": tuple(p.get("choices", ()))}) for p in fields.get("params", ()))
    fields["google_access"] = GoogleAccess.from_dict(fields.get("google_access"))
    return Job(**fields)
