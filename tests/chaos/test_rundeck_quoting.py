"""The Rundeck export's quoting as a property (issue 16, item 3): for any param pattern a
job may declare and any value, if Rundeck lets the value through the exported option, the
node's shell (POSIX shlex) reads the step as exactly the intended argv."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from mlbatch.core.catalog import DEFAULT_STR_PATTERN, Job, Param
from mlbatch.core.errors import BadInput
from mlbatch.triggers.rundeck import TYPE_PATTERNS, job_definition
from tests.support import rundeck

pytestmark = pytest.mark.chaos
EXAMPLES = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
UNQUOTABLE = re.compile(r"['\x00-\x1f\x7f-\x9f\u2028\u2029]")

# Pieces of patterns a job author might write, some of them far too loose.
FRAGMENTS = [r"[a-z]+", r"[0-9]*", r".", r".*", r"[\s\S]*", r"(.|\n)*", r"[^x]*", r"\D*", r"\W+", r"\n", r"'", r" ", r"\r?",
             r"[\x00-\x7f]*", r"[^\n]*", r"(a|b')", r"\\", r"\$\(id\)", r"[';]*", r"(?s:.*)"]  # fmt: skip
patterns = st.one_of(
    st.sampled_from([DEFAULT_STR_PATTERN, *FRAGMENTS]),
    st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=4).map("".join),
)
HOSTILE = ["a\n'; echo INJECTED; '", "x'; id #", "\n'", "a\r\n'$(id)'", "\u2028'", "a\x00b", "'", "' '", "\\'", "\x1b[2J"]


def _values(draw, param: Param) -> str:
    pattern = param.pattern if param.type == "str" else TYPE_PATTERNS[param.type]
    return draw(st.one_of(st.text(max_size=30), st.sampled_from(HOSTILE), st.from_regex(pattern, fullmatch=True)))


@EXAMPLES
@given(data=st.data(), pattern=patterns, kind=st.sampled_from(["str", "str", "str", "int", "float", "bool"]))
def test_every_value_rundeck_accepts_reaches_run_batch_as_one_argument(tally, data, pattern, kind):
    param = Param(name="p", type=kind, default=None, pattern=pattern)
    job = Job(name="prop", container="trainer", command=("python", "prop.py"), params=(param,))
    try:
        definition = job_definition(job, Path("/srv/mlbatch"))
    except BadInput as exc:  # a pattern that is no regex
        assert "param p" in str(exc)
        return
    options = {o["name"]: o for o in definition["options"]}
    step = definition["sequence"]["commands"][0]["exec"]
    value = _values(data.draw, param)
    version = data.draw(st.one_of(st.sampled_from(["latest", "v1.2.3"]), st.sampled_from(HOSTILE)), label="version")
    note(f"regex {options['p']['regex']!r}; step {step!r}")
    accepted = rundeck.accepts(options["p"], value) and rundeck.accepts(options["version"], version)
    if UNQUOTABLE.search(value + version):
        tally["bad_inputs_tried"] += 1
        tally["bad_inputs_refused"] += not accepted
    if not accepted:
        return
    assert not UNQUOTABLE.search(value + version), f"{value!r} / {version!r} went through"
    if kind == "str" and value:
        assert re.fullmatch(pattern, value), "the option admits no more than the param's own pattern"
    argv = shlex.split(rundeck.substitute(step, {"p": value, "version": version}, "4711"), posix=True)
    assert argv == [
        "invoke", "--search-root", "/srv/mlbatch", "run-batch", "--job", "prop", "--version", version,
        "--param", f"p={value}", "--idempotency-key", "rundeck-4711",
    ]  # fmt: skip
