import pytest

from mlbatch.core.catalog import parse_catalog, parse_params
from mlbatch.core.errors import BadInput
from tests.conftest import ROOT

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
