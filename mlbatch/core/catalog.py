"""The job catalog (`batch_code/jobs.yaml`) and the validation of run parameters."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from mlbatch.core import gpus, machines
from mlbatch.core.access import MAX_PREFIXES, PREFIX_FORM, GoogleAccess, prefix_problem
from mlbatch.core.errors import BadInput
from mlbatch.core.names import GCE_NAME, MAX_JOB_NAME
from mlbatch.core.schema import joined, problem, problems
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
    # The job container's limits (mlbatch.core.machines.job_limits); 0: from the machine type.
    memory_mb: int = 0
    pids: int = 0
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
        missing = [name for name, p in known.items() if name not in given and p.default is None]
        if missing:
            raise BadInput(f"param {missing[0]} of job {self.name} has no default: expected --param {missing[0]}=VALUE")
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


# --- jobs.yaml, as a schema (pydantic): every problem of the file at once, with its path --------

_JOB_NAME = rf"^[a-z]([-a-z0-9]{{0,{MAX_JOB_NAME - 2}}}[a-z0-9])?$"
_TYPES = ", ".join(PARAM_TYPES)


_Retries = Annotated[StrictInt, Field(ge=0, le=10, description="an integer from 0 to 10")]
_Timeout = Annotated[StrictInt, Field(ge=10, le=MAX_TIMEOUT, description=f"an integer from 10 to {MAX_TIMEOUT}")]
_LogMegabytes = Annotated[StrictInt, Field(ge=0, le=1_000_000, description="an integer from 0 (no cap) to 1000000")]


# defer_build on every model below: built at their first validation (a release, the jobs commands),
# not at import; a run takes its jobs from the manifest (job_from_dict) and never validates a catalog.
class ParamSpec(BaseModel):
    """A job's param: `--param name=value` is parsed as its type and checked against its form."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True, defer_build=True)

    type: Literal["int", "float", "str", "bool"] = Field("str", description=f"one of {_TYPES}")
    default: Any = Field(None, description="the value when --param does not give one; of the param's type; without one, every run must give --param NAME=VALUE")
    help: str = Field("", description="what the param does, for people and exports")
    pattern: str = Field(DEFAULT_STR_PATTERN, description="a regular expression a str value must match in full")
    choices: list[Any] = Field([], description="the only values allowed, of the param's type")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise problem(f"a regular expression ({exc})") from None
        return pattern


class GpuSpec(BaseModel):
    """The GPUs a job's VM has and its container gets (mlbatch.core.gpus: which types, on which
    machine types, how many)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    type: StrictStr = Field(description=f"a GPU type: one of {', '.join(gpus.TYPES)}")
    count: StrictInt = Field(1, ge=1, le=16, description="an integer from 1 to 16")


class GoogleAccessSpec(BaseModel):
    """What a job's container may do in the run's bucket, with a token of the runner downscoped
    to it (mlbatch.core.access): none declared, no credentials at all."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    read: list[StrictStr] = Field(
        [], max_length=MAX_PREFIXES, description=f"object prefixes to read, at most {MAX_PREFIXES}: {PREFIX_FORM}"
    )
    write: list[StrictStr] = Field(
        [], max_length=MAX_PREFIXES, description=f"object prefixes under runs/ to write, at most {MAX_PREFIXES}: {PREFIX_FORM}"
    )

    @field_validator("read", "write")
    @classmethod
    def _prefixes(cls, prefixes: list[str], info: ValidationInfo) -> list[str]:
        for prefix in prefixes:
            if form := prefix_problem(prefix, info.field_name == "write"):
                raise problem(f"{form} (not {prefix!r})")
        return prefixes


_ParamName = Annotated[str, Field(pattern=_PARAM_NAME.pattern, description="a param name: [a-z][a-z0-9_]*, at most 40")]


class JobSpec(BaseModel):
    """A job of the catalog: what runs (a container and an argv), where and for how long."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True, defer_build=True)

    container: StrictStr = Field(pattern=GCE_NAME.pattern, description="a folder of containers/ with a Dockerfile, e.g. trainer")
    command: list[Annotated[StrictStr, Field(min_length=1)]] = Field(
        min_length=1, description="a non-empty list of strings (an argv list, never a shell string)"
    )
    description: str = Field("", description="one line for people")
    machine_type: StrictStr = Field(
        "e2-standard-4", pattern=_MACHINE_TYPE.pattern, description="a machine type, e.g. n2-standard-8"
    )
    spot: StrictBool = Field(False, description="true or false: run on Spot VMs (preemptible, cheaper)")
    max_preemption_retries: _Retries = 2  # attempts after a preemption
    on_demand_after_preemptions: _Retries = 0  # 0: stay on Spot; K: attempts after K preemptions run on-demand
    timeout_seconds: _Timeout = 3600
    gpu: GpuSpec | None = Field(None, description="{type: nvidia-..., count: N}")
    params: dict[_ParamName, ParamSpec] = Field({}, description="a mapping of name -> {type, default, help, pattern, choices}")
    concurrency: Literal["allow", "skip", "wait"] = Field("allow", description=f"one of {', '.join(CONCURRENCY)}")
    metric: StrictStr = Field(
        "", pattern=r"^([A-Za-z_][A-Za-z0-9_.-]{0,63})?$", description="a key of the job's metrics.json, e.g. accuracy"
    )
    metric_goal: Literal["max", "min"] = Field("max", description="max or min")
    max_log_mb: _LogMegabytes = 0
    memory_mb: StrictInt | None = Field(
        None,
        description=f"an integer from {machines.MIN_MEMORY_MB} to what the machine type leaves for the agent and the "
        "engine (the job container's memory limit in MB), or null: that much",
    )
    pids: StrictInt | None = Field(
        None,
        ge=16,
        le=machines.MAX_PIDS,
        description=f"an integer from 16 to {machines.MAX_PIDS} (the job container's processes and threads), "
        "or null: 1024 per vCPU",
    )

    @field_validator("memory_mb")
    @classmethod
    def _fits_the_machine(cls, memory_mb: int | None, info: ValidationInfo) -> int | None:
        """No more than the machine type has once the agent and the engine have their headroom."""
        if memory_mb is None:
            return None
        machine_type = info.data.get("machine_type", "")
        most = machines.max_job_memory_mb(machine_type) if machine_type else None
        if memory_mb < machines.MIN_MEMORY_MB or (most is not None and memory_mb > most):
            fits = f"{most} (what {machine_type} leaves for the job)" if most is not None else "the machine's memory"
            raise problem(f"an integer from {machines.MIN_MEMORY_MB} to {fits}, or null")
        return memory_mb

    network: StrictBool = Field(False, description="true or false: the job container gets a network (metadata server blocked)")
    google_access: GoogleAccessSpec | None = Field(
        None, description="{read: [prefix/], write: [runs/.../]}: a token limited to these object prefixes (implies a network)"
    )

    @field_validator("gpu", mode="before")
    @classmethod
    def _no_gpu(cls, value: Any) -> Any:
        return None if value == {} else value

    @field_validator("params", mode="before")
    @classmethod
    def _params(cls, value: Any) -> Any:
        if value is None:
            return {}
        return {k: ({} if v is None else v) for k, v in value.items()} if isinstance(value, Mapping) else value

    @field_validator("container")
    @classmethod
    def _known_container(cls, container: str, info: ValidationInfo) -> str:
        known = (info.context or {}).get("containers")
        if known is not None and container not in known:
            raise problem(f"one of containers/: {', '.join(sorted(known))}")
        return container


_JobName = Annotated[
    str,
    Field(
        pattern=_JOB_NAME,
        description=f"a job name: lowercase letters, digits and dashes, starting with a letter, at most {MAX_JOB_NAME} long",
    ),
]


class CatalogFile(BaseModel):
    """batch_code/jobs.yaml (`batch_code/jobs.schema.json` is this model's JSON Schema)."""

    model_config = ConfigDict(extra="forbid", defer_build=True, title="mlbatch job catalog (batch_code/jobs.yaml)")

    jobs: dict[_JobName, JobSpec] = Field(min_length=1, description="a mapping of job name -> job, with at least one job")


def _job(name: str, spec: JobSpec) -> Job:
    return Job(
        name=name,
        container=spec.container,
        command=tuple(spec.command),
        description=spec.description,
        machine_type=spec.machine_type,
        spot=spec.spot,
        max_preemption_retries=spec.max_preemption_retries,
        on_demand_after_preemptions=spec.on_demand_after_preemptions,
        timeout_seconds=spec.timeout_seconds,
        gpu_type=spec.gpu.type if spec.gpu else "",
        gpu_count=spec.gpu.count if spec.gpu else 0,
        params=tuple(
            Param(name=k, type=p.type, default=p.default, help=p.help, pattern=p.pattern, choices=tuple(p.choices))
            for k, p in spec.params.items()
        ),
        concurrency=spec.concurrency,
        metric=spec.metric,
        metric_goal=spec.metric_goal,
        max_log_mb=spec.max_log_mb,
        memory_mb=spec.memory_mb or 0,
        pids=spec.pids or 0,
        network=spec.network,
        google_access=GoogleAccess(tuple(spec.google_access.read), tuple(spec.google_access.write))
        if spec.google_access
        else GoogleAccess(),
    )


def _default_problems(jobs: dict[str, Job]) -> list[str]:
    """A param's default must be a value its `--param` would accept."""
    lines = []
    for job in jobs.values():
        for param in job.params:
            if param.default is None:
                continue
            try:
                param.parse(job.name, str(param.default).lower() if param.type == "bool" else str(param.default))
            except BadInput as exc:
                lines.append(f"jobs.{job.name}.params.{param.name}.default: {exc}")
    return lines


def _gpu_problems(jobs: dict[str, Job]) -> list[str]:
    """A GPU type Compute offers, on a machine type that takes it, in a count that machine type
    allows; a machine type that comes with GPUs says so in `gpu` (mlbatch.core.gpus)."""
    lines = []
    for job in jobs.values():
        found = gpus.check(job.machine_type, job.gpu_type, job.gpu_count)
        if found is not None:
            lines.append(f"jobs.{job.name}.gpu: invalid {found.value} of job {job.name}: expected {found.expected}")
    return lines


def parse_catalog(text: str, containers: set[str] | None = None) -> dict[str, Job]:
    """Parse and validate jobs.yaml; `containers` (when known) are the names jobs may use.
    Every problem is reported at once (BadInput, exit 100), each with its path."""
    import yaml  # only a release and the catalog's own commands parse jobs.yaml: a run reads the manifest

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BadInput(f"jobs.yaml is not valid YAML: {exc}") from None
    if not isinstance(data, Mapping):
        raise BadInput("jobs.yaml: expected a top-level 'jobs:' mapping with at least one job")
    try:
        catalog = CatalogFile.model_validate(data, context={"containers": containers})
    except ValidationError as exc:
        raise BadInput(
            joined(
                "jobs.yaml: ",
                problems(exc, CatalogFile, "", "{where} {value} must be {form}", {"jobs": "job name", "params": "param name"}),
            )
        ) from None
    jobs = {name: _job(name, spec) for name, spec in catalog.jobs.items()}
    if lines := _default_problems(jobs) + _gpu_problems(jobs):
        raise BadInput(joined("jobs.yaml: ", lines))
    return jobs


def json_schema() -> dict[str, Any]:
    """The JSON Schema of jobs.yaml, from the model (committed as batch_code/jobs.schema.json)."""
    return CatalogFile.model_json_schema()


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
