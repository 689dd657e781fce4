"""`invoke rundeck.export`: one Rundeck job definition (YAML) per catalog job.

Each job's options are its params (defaults, patterns, choices) plus `version`; its one
step calls `invoke run-batch` with `--idempotency-key ${job.execid}`, so a Rundeck retry
of an execution never starts a second run. Option values reach the command through
Rundeck's `${option.NAME}` substitution inside single quotes, and each option's regex
(enforced by Rundeck before the step runs) refuses a quote, so no value is ever read by
a shell as anything but one argument; run-batch then validates it against the catalog.
"""

from __future__ import annotations

import shlex
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from mlbatch.core.catalog import Job, Param
from mlbatch.core.errors import MEANINGS, BadInput

GROUP = "mlbatch"
# Rundeck option regexes are Java regexes; these forms mean the same in Python and Java.
TYPE_PATTERNS = {"int": r"-?[0-9]+", "float": r"-?[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?", "bool": r"true|false"}
NO_QUOTE = r"(?!.*')"  # a lookahead: the value holds no single quote (it is single-quoted in the command)
VERSION_PATTERN = r"latest|v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?"  # run-batch checks the exact form


def option_regex(param: Param) -> str:
    inner = param.pattern if param.type == "str" else TYPE_PATTERNS[param.type]
    return f"^{NO_QUOTE}(?:{inner})$"


def _default(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else ("" if value is None else str(value))


def _option(param: Param) -> dict[str, Any]:
    option: dict[str, Any] = {
        "name": param.name,
        "description": param.help or f"{param.type} param {param.name}",
        "required": True,
        "regex": option_regex(param),
    }
    if param.default is not None:
        option["value"] = _default(param.default)
    if param.choices or param.type == "bool":
        option["values"] = [_default(c) for c in param.choices] if param.choices else ["true", "false"]
        option["enforced"] = True
    return option


def command(job: Job, project_dir: Path, invoke: str = "invoke") -> str:
    """The step's command line; `${option.X}` and `${job.execid}` are Rundeck's substitutions."""
    parts = [shlex.quote(invoke), "--search-root", shlex.quote(str(project_dir)), "run-batch", "--job", job.name]
    parts += ["--version", "'${option.version}'"]
    for param in job.params:
        parts += ["--param", f"'{param.name}=${{option.{param.name}}}'"]
    parts += ["--idempotency-key", "'rundeck-${job.execid}'"]
    return " ".join(parts)


def exit_code_table() -> str:
    reserved = [int(code) for code in MEANINGS if code]
    rows = [f"| {int(code)} | {meaning} |" for code, meaning in MEANINGS.items()]
    job_codes = f"| 1-{min(reserved) - 1}, {max(reserved) + 1}-255 | the job ran and exited with this code |"
    return "\n".join(["| exit code | meaning |", "|---:|---|", rows[0], job_codes, *rows[1:]])


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the description) as literal blocks, as Rundeck's own exports do."""


_Dumper.add_representer(str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None))


def job_definition(job: Job, project_dir: Path, invoke: str = "invoke") -> dict[str, Any]:
    description = (job.description or f"mlbatch job {job.name}") + "\n\nExit codes of the step:\n\n" + exit_code_table()
    return {
        # Stable across exports: re-importing updates the job instead of adding a copy.
        "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"mlbatch:{project_dir}:{job.name}")),
        "name": job.name,
        "group": GROUP,
        "description": description,
        "loglevel": "INFO",
        "executionEnabled": True,
        "scheduleEnabled": True,
        "multipleExecutions": job.concurrency != "skip",
        "options": [
            {
                "name": "version",
                "description": "release to run: vX.Y.Z, or latest (the newest that is not a pre-release)",
                "required": True,
                "value": "latest",
                "regex": f"^{NO_QUOTE}(?:{VERSION_PATTERN})$",
            },
            *(_option(p) for p in job.params),
        ],
        "sequence": {"keepgoing": False, "strategy": "node-first", "commands": [{"exec": command(job, project_dir, invoke)}]},
    }


def export(catalog: Mapping[str, Job], out_dir: Path, project_dir: Path, invoke: str = "invoke") -> list[Path]:
    """Write `<out_dir>/<job>.yaml` (a Rundeck job list of one) for every job; return the paths."""
    if not project_dir.is_absolute():
        raise BadInput(f"invalid --project-dir {str(project_dir)!r}: expected an absolute path on the Rundeck node")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for job in catalog.values():
        path = out_dir / f"{job.name}.yaml"
        path.write_text(yaml.dump([job_definition(job, project_dir, invoke)], Dumper=_Dumper, sort_keys=False, width=1000))
        written.append(path)
    return written
