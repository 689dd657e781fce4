"""The Rundeck export's quoting (issue 16, item 3): whatever a param's pattern admits, no
option value Rundeck lets through leaves its single quotes in the step, checked with the
node's real shell; what cannot be passed safely is refused at export with 100."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mlbatch.core.catalog import parse_catalog
from mlbatch.core.errors import BadInput, ExitCode
from mlbatch.triggers.rundeck import job_definition
from tests.support import rundeck
from tests.support.catalogs import one_job_catalog

# Patterns a job may declare that admit a newline and a quote: the old guard `(?!.*')`
# looked only up to the first line end.
LOOSE_PATTERNS = [r"[^x]*", r"[\s\S]*", r"(.|\n)*", r"\D*", r".*\n.*"]
HOSTILE = [
    "a\n'; echo INJECTED; '",
    "\n'$(echo INJECTED)'",
    "a\r\n' `echo INJECTED` '",
    "a\u2028'; echo INJECTED #",
    "x'; echo INJECTED #",
    "a\x00b",
    "tab\there",
    "bell\x07",
    "esc\x1b[2J",
    "c1\x9b2J",
    "del\x7f",
]
HARMLESS = ["plain", "with space", "dollar $(id) `id` ${HOME}", 'double "quote"', "back\\slash", "semi; colon & amp | pipe", ""]


def _job(params: dict, name: str = "loose"):
    return parse_catalog(one_job_catalog(params, name))[name]


def _argv_dump(tmp_path: Path) -> Path:
    """Stands in for `invoke` on the Rundeck node: prints its argv, NUL-separated."""
    script = tmp_path / "argv-dump"
    script.write_text("#!/bin/sh\nprintf '%s\\0' \"$@\"\n")
    script.chmod(0o755)
    return script


def _run_step(step: str, value: str) -> bytes:
    command = rundeck.substitute(step, {"version": "latest", "text": value}, "4711")
    return subprocess.run(["/bin/sh", "-c", command], capture_output=True, check=False, timeout=30).stdout


@pytest.mark.parametrize("pattern", LOOSE_PATTERNS)
def test_no_value_rundeck_accepts_leaves_its_quotes_in_the_real_shell(tmp_path, pattern):
    job = _job({"text": {"type": "str", "pattern": pattern}})
    invoke = _argv_dump(tmp_path)
    (definition,) = [job_definition(job, Path("/srv/mlbatch"), str(invoke))]
    option = next(o for o in definition["options"] if o["name"] == "text")
    step = definition["sequence"]["commands"][0]["exec"]
    for value in HOSTILE + HARMLESS:
        if not rundeck.accepts(option, value):
            continue
        assert "\0" not in value, f"{pattern}: Rundeck would pass {value!r}, whose NUL no command line can carry"
        expected = ["--search-root", "/srv/mlbatch", "run-batch", "--job", "loose", "--version", "latest"]
        expected += ["--param", f"text={value}", "--idempotency-key", "rundeck-4711"]
        argv = _run_step(step, value).split(b"\0")[:-1]
        assert argv == [arg.encode() for arg in expected], f"{pattern}: {value!r} left its quotes"
    assert not any(rundeck.accepts(option, value) for value in HOSTILE)


def test_the_guard_also_holds_for_the_version_and_typed_options():
    typed = {"n": {"type": "int", "default": 1}, "rate": {"type": "float", "default": 0.5}, "flag": {"type": "bool"}}
    job = _job(typed, "typed")
    options = {o["name"]: o for o in job_definition(job, Path("/srv/mlbatch"))["options"]}
    for value in ("1\n'; id #", "v1.0.0\n'", "latest\n"):
        assert not any(rundeck.accepts(option, value) for option in options.values()), value
    assert rundeck.accepts(options["rate"], "1e-3") and rundeck.accepts(options["version"], "v1.2.3-rc.1")


@pytest.mark.parametrize(
    ("param", "named"),
    [
        ({"type": "str", "pattern": ".*", "default": "it's"}, "default"),
        ({"type": "str", "pattern": ".*", "choices": ["ok", "x'; id #"]}, "choice"),
    ],
)
def test_a_default_or_choice_the_step_cannot_quote_is_refused_at_export(param, named):
    with pytest.raises(BadInput) as caught:
        job_definition(_job({"p": param}), Path("/srv/mlbatch"))
    assert caught.value.exit_code == ExitCode.BAD_INPUT
    assert "param p" in str(caught.value) and named in str(caught.value) and "single quote" in str(caught.value)
