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
        ("jobs:\n  t: {container: nope, command: [x]}", "jobs.t.container 'nope' must be one of containers/: trainer"),
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
    with pytest.raises(BadInput, match=r"jobs.train.params.note.pattern '\[unclosed' must be a regular expression"):
        _float_job(note={"type": "str", "pattern": "[unclosed"})


def test_a_record_never_carries_a_non_finite_float():
    from mlbatch.core import runs
    from tests.unit.test_records import SPEC

    with pytest.raises(ValueError, match="not JSON compliant"):
        dataclasses.replace(SPEC, params={"rate": float("nan")}).to_json()
    assert runs.RunSpec.from_json(SPEC.to_json()) == SPEC
    metrics = {"loss": float("nan"), "top": float("-inf"), "acc": 0.5, "nested": {}, "note\x1b[2J": "\x1b]0;t\x07"}
    assert runs.scalar_metrics(metrics) == {"loss": "nan", "top": "-inf", "acc": 0.5, "note^[[2J": "^[]0;t^G"}


# --- issue 18: a schema, every problem at once with its path, and the JSON Schema editors read --


def test_every_problem_of_a_catalog_is_named_at_once_with_its_path():
    text = (
        "jobs:\n"
        "  t:\n    container: trainer\n    command: [x]\n    timeout_seconds: 5\n    spot: sometimes\n"
        "    params:\n      n: {type: int, default: many}\n      Bad: {type: int}\n"
        "  u:\n    container: trainer\n    command: python u.py\n    metric_goal: best\n"
    )
    with pytest.raises(BadInput) as caught:
        parse_catalog(text, {"trainer"})
    message = str(caught.value)
    assert message.startswith("jobs.yaml: 5 problems:"), message
    for part in (
        "jobs.t.timeout_seconds 5 must be an integer from 10 to 604800",
        "jobs.t.spot 'sometimes' must be true or false",
        "invalid param name 'Bad' (jobs.t.params.Bad): expected a param name",
        "jobs.u.command 'python u.py' must be a non-empty list of strings (an argv list, never a shell string)",
        "jobs.u.metric_goal 'best' must be max or min",
    ):
        assert part in message, message
    # the defaults are checked once the structure holds: as --param would take them
    with pytest.raises(BadInput, match=r"jobs.t.params.n.default: invalid param n='many' of job t: expected a int"):
        parse_catalog("jobs:\n  t: {container: trainer, command: [x], params: {n: {type: int, default: many}}}", {"trainer"})


def test_the_committed_json_schema_is_the_models():
    """batch_code/jobs.schema.json is what `invoke jobs.schema` writes from the catalog's model."""
    from mlbatch.release.jobs import SCHEMA_FILE, schema_text

    assert (ROOT / SCHEMA_FILE).read_text() == schema_text(), "run `invoke jobs.schema` and commit the file"
    assert (ROOT / "batch_code" / "jobs.yaml").read_text().startswith("# yaml-language-server: $schema=jobs.schema.json\n")


def test_editors_checking_with_the_json_schema_agree_with_the_catalog():
    import json

    import jsonschema
    import yaml

    schema = json.loads((ROOT / "batch_code" / "jobs.schema.json").read_text())
    good = yaml.safe_load((ROOT / "batch_code" / "jobs.yaml").read_text())
    jsonschema.validate(good, schema)
    for bad in (
        {"jobs": {}},
        {"jobs": {"t": {"container": "trainer", "command": "python t.py"}}},
        {"jobs": {"t": {"container": "trainer", "command": ["x"], "colour": "red"}}},
        {"jobs": {"t": {"container": "trainer", "command": ["x"], "params": {"n": {"type": "complex"}}}}},
        {"jobs": {"t": {"container": "trainer", "command": ["x"], "concurrency": "never"}}},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
        with pytest.raises(BadInput):
            parse_catalog(yaml.safe_dump(bad), {"trainer"})


def test_a_param_without_a_default_must_be_given_by_every_run():
    job = parse_catalog(one_job_catalog({"lr": {"type": "float"}, "seed": {"type": "int", "default": 0}}), {"trainer"})["train"]
    with pytest.raises(BadInput, match=r"param lr of job train has no default: expected --param lr=VALUE") as refused:
        job.resolve_params({})
    assert refused.value.exit_code == ExitCode.BAD_INPUT
    assert job.argv(job.resolve_params({"lr": "0.5"}))[-2:] == ["--lr=0.5", "--seed=0"]
