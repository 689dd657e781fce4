import dataclasses

import pytest

from mlbatch.core.catalog import parse_catalog, parse_params
from mlbatch.core.errors import BadInput, ExitCode
from tests.conftest import ROOT
from tests.support.catalogs import one_job_catalog

JOB = """
jobs:
  train:
    container: trainer
    command: [python, train.py]
    params:
      n: {type: int, default: 3}
      name: {type: str, default: abc}
      flag: {type: bool, default: false}
"""


def test_the_repo_catalog_is_valid():
    jobs = parse_catalog((ROOT / "batch_code" / "jobs.yaml").read_text(), containers={"trainer"})
    assert {"train-digits", "fail-on-purpose", "sleep"} <= set(jobs)
    assert jobs["train-digits"].command == ("python", "train_digits.py")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("jobs: {}", "at least one job"),
        ("jobs:\n  t: {container: trainer, command: python train.py}", "argv list"),
        ("jobs:\n  t: {container: nope, command: [x]}", "not one of containers/"),
        ("jobs:\n  t: {container: trainer, command: [x], timeout_seconds: 1}", "timeout_seconds"),
        ("jobs:\n  T_bad: {container: trainer, command: [x]}", "invalid job name"),
        ("jobs:\n  t: {container: trainer, command: [x], colour: red}", "unknown keys"),
        ("jobs:\n  t: {container: trainer, command: [x], params: {n: {type: complex}}}", "type 'complex'"),
        ("jobs: [", "not valid YAML"),
    ],
)
def test_bad_catalogs_are_refused(text, message):
    with pytest.raises(BadInput, match=message):
        parse_catalog(text, containers={"trainer"})


def test_params_are_typed_defaulted_and_appended_as_arguments():
    job = parse_catalog(JOB, {"trainer"})["train"]
    params = job.resolve_params(parse_params(["n=5", "flag=true"]))
    assert params == {"n": 5, "name": "abc", "flag": True}
    assert job.argv(params) == ["python", "train.py", "--n=5", "--name=abc", "--flag=true"]


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        (["m=1"], "unknown param 'm'"),
        (["n=five"], "expected a int"),
        (["name=a;rm -rf /"], "expected a value matching"),
        (["name=$(reboot)"], "expected a value matching"),
        (["name=`id`"], "expected a value matching"),
        (["noequals"], "expected name=value"),
        (["n=1", "n=2"], "given twice"),
    ],
)
def test_bad_params_are_refused(pairs, message):
    job = parse_catalog(JOB, {"trainer"})["train"]
    with pytest.raises(BadInput, match=message):
        job.resolve_params(parse_params(pairs))


# --- issue 16, item 6: no non-finite float and no control character gets into a run ----------

FLOAT_PARAMS = {"rate": {"type": "float", "default": 0.25}, "note": {"type": "str", "default": "ok", "pattern": r"[\s\S]*"}}


def _float_job(**params):
    return parse_catalog(one_job_catalog({**FLOAT_PARAMS, **params}), {"trainer"})["train"]


@pytest.mark.parametrize("raw", ["nan", "NaN", "-nan", "inf", "-inf", "+inf", "infinity", "-Infinity", "1e999", "-1e400"])
def test_floats_that_are_not_finite_are_refused_naming_the_param_and_the_form(raw):
    job = _float_job()
    with pytest.raises(BadInput) as caught:
        job.resolve_params(parse_params([f"rate={raw}"]))
    assert caught.value.exit_code == ExitCode.BAD_INPUT
    assert f"param rate={raw!r} of job train" in str(caught.value) and "expected a finite float" in str(caught.value)


@pytest.mark.parametrize("default", ["nan", "inf", "-inf"])
def test_a_catalog_with_a_non_finite_float_default_is_refused(default):
    with pytest.raises(BadInput, match="param rate=.* of job train: expected a finite float"):
        _float_job(rate={"type": "float", "default": float(default)})


def test_a_release_with_a_non_finite_default_is_refused_when_the_run_resolves_its_params():
    """A manifest written before finite floats were required may carry NaN as a default."""
    job = _float_job()
    old = dataclasses.replace(job, params=(dataclasses.replace(job.params[0], default=float("nan")), job.params[1]))
    with pytest.raises(BadInput, match="param rate .* default nan .* expected a finite float"):
        old.resolve_params({})


@pytest.mark.parametrize("raw", ["a\nb", "a\rb", "tab\there", "\x1b]0;title\x07", "nul\x00", "c1\x9b", "del\x7f"])
def test_string_values_with_control_characters_are_refused_whatever_the_pattern(raw):
    job = _float_job()
    with pytest.raises(BadInput) as caught:
        job.resolve_params({"note": raw})
    assert caught.value.exit_code == ExitCode.BAD_INPUT
    assert f"param note={raw!r} of job train" in str(caught.value) and "no control character" in str(caught.value)


def test_a_pattern_that_is_no_regex_is_refused_with_the_catalog():
    with pytest.raises(BadInput, match=r"param note: pattern '\[unclosed' is not a regular expression"):
        _float_job(note={"type": "str", "pattern": "[unclosed"})


def test_a_record_never_carries_a_non_finite_float():
    from mlbatch.core import runs
    from tests.unit.test_records import SPEC

    with pytest.raises(ValueError, match="not JSON compliant"):
        dataclasses.replace(SPEC, params={"rate": float("nan")}).to_json()
    assert runs.RunSpec.from_json(SPEC.to_json()) == SPEC
    metrics = {"loss": float("nan"), "top": float("-inf"), "acc": 0.5, "nested": {}, "note\x1b[2J": "\x1b]0;t\x07"}
    assert runs.scalar_metrics(metrics) == {"loss": "nan", "top": "-inf", "acc": 0.5, "note^[[2J": "^[]0;t^G"}
