"""`invoke rundeck.export`: one Rundeck job definition (YAML) per catalog job.

Each job's options are its params (defaults, patterns, choices) plus `version`; its one
step calls `invoke run-batch` with `--idempotency-key ${job.execid}`, so a Rundeck retry
of an execution never starts a second run. Option values reach the command through
Rundeck's `${option.NAME}` substitution inside single quotes. Rundeck checks a value
against its option's regex (the whole value, Java's `matches()`) before the step runs; each
regex here starts with a guard that refuses a single quote and every control character
anywhere in the value, whatever the param's own pattern admits, so no value is ever read by
a shell as anything but one argument. Options Rundeck does not check by regex (choices,
enforced) and defaults are checked here, at export. run-batch then validates the value
against the catalog.
"""

from __future__ import annotations

import re
import shlex
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from mlbatch.core.catalog import Job, Param
from mlbatch.core.errors import MEANINGS, BadInput
from mlbatch.core.text import CONTROL_CHARACTERS

GROUP = "mlbatch"
# Rundeck option regexes are Java regexes; these forms mean the same in Python and Java.
TYPE_PATTERNS = {"int": r"-?[0-9]+", "float": r"-?[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?", "bool": r"true|false"}
# What no value may hold: the single quote (values are single-quoted in the step) and control
# characters (C0 with CR and LF, DEL, C1, and the line separators Java's regex ends lines at).
# `[\s\S]` is any character in Java and Python alike, so the lookahead spans the whole value:
# the old guard `(?!.*')` stopped at the first line end (`.` does not cross it), and a
# pattern admitting a newline let "x\n'; cmd" out of its quotes.
UNQUOTABLE = "'" + CONTROL_CHARACTERS + r"\u2028\u2029"  # the body of a character class
GUARD = rf"(?![\s\S]*[{UNQUOTABLE}])"
VERSION_PATTERN = r"latest|v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?"  # run-batch checks the exact form


def guarded(pattern: str) -> str:
    """An option regex: the guard, then the pattern over the whole value."""
    return f"^{GUARD}(?:{pattern})$"


def option_regex(param: Param) -> str:
    regex = guarded(param.pattern if param.type == "str" else TYPE_PATTERNS[param.type])
    try:
        re.compile(regex)
    except re.error as exc:
        raise BadInput(f"param {param.name}: pattern {param.pattern!r} cannot be exported as an option regex: {exc}") from None
    return regex


def _quotable(param: Param, what: str, value: str) -> str:
    if re.search(f"[{UNQUOTABLE}]", value):
        raise BadInput(
            f"param {param.name}: {what} {value!r} cannot be passed through Rundeck: "
            "expected a value with no single quote and no control character (the step single-quotes it)"
        )
    return value


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
        option["value"] = _quotable(param, "default", _default(param.default))
    if param.choices or param.type == "bool":
        choices = [_quotable(param, "choice", _default(c)) for c in param.choices]
        option["values"] = choices or ["true", "false"]
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
                "regex": guarded(VERSION_PATTERN),
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
