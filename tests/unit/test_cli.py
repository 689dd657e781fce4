"""The command line as people mistype it (issue 18): every task of the collection, run through
the `mlbatch` program (mlbatch.cli, the same tasks as `invoke`), with an unknown option, a
missing value and an ill-typed value: each exits 100 with one line naming the option, no
traceback, before anything happens. The cases come from the collection itself, so a new task
or option is covered without touching this file. The last tests run the issue's own examples
as a user does, through both `mlbatch` and `invoke`, in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from invoke.parser import ParserContext

from mlbatch.cli import MlbatchProgram
from tasks import ns
from tasks.common import SHORT_FLAGS, MlbatchTask
from tests.conftest import ROOT

MLBATCH = str(Path(sys.executable).parent / "mlbatch")
INVOKE = str(Path(sys.executable).parent / "invoke")

# Valid values for arguments given in place (positional), so that the mistake under test is the only one.
VALID = {"job": "sleep", "version": "v1.0.0", "run_id": "sleep-20260101-000000-abcd", "name": "new-job", "cron": "0 3 * * *"}
# Values of the wrong form for options that are plain text to the parser (typed options get "x!").
BAD = {
    "profile": "nope", "version": "1.0", "run_id": "Not_A_Run", "job": "Not_A_Job", "name": "Not_A_Job", "cron": "daily",
    "index_url": "ftp://mirror", "lock": "/no/such/base-images.yaml",
}  # fmt: skip
CONTEXTS = {ctx.name: ctx for ctx in ns.to_contexts()}


def attr(arg) -> str:
    return (arg.attr_name or arg.name).replace("-", "_")


def long(arg) -> str:
    return "--" + attr(arg).replace("_", "-")


# A gcp profile that loads (tasks whose default profile is gcp get to their own checks); nothing is called.
GCP = {
    "PROJECT": "my-ml-project",
    "BUCKET": "gs://my-ml-project-mlbatch",
    "REGISTRY": "europe-west4-docker.pkg.dev/my-ml-project/mlbatch",
    "SERVICE_ACCOUNT": "mlbatch-runner@my-ml-project.iam.gserviceaccount.com",
}


def run(monkeypatch, capsys, tmp_path: Path, *argv: str) -> tuple[int, str, str]:
    """`mlbatch ARGV` in this process, on a state dir and a bucket of its own."""
    monkeypatch.setenv("INVOKE_MLBATCH_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("INVOKE_MLBATCH_PROFILES_LOCAL_BUCKET", f"file://{tmp_path / 'bucket'}")
    for key, value in GCP.items():
        monkeypatch.setenv(f"INVOKE_MLBATCH_PROFILES_GCP_{key}", value)
    program = MlbatchProgram(name="mlbatch", binary="mlbatch", binary_names=["mlbatch"])
    try:
        program.run(["mlbatch", "--search-root", str(ROOT), *argv])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def positionals(ctx: ParserContext, replace: dict[str, str] | None = None) -> list[str]:
    return [(replace or {}).get(attr(a), VALID[attr(a)]) for a in ctx.positional_args]


def cases() -> list[tuple[str, list[str], str]]:
    """(id, argv, what the one line must name) for every task and option."""
    found = []
    for name, ctx in sorted(CONTEXTS.items()):
        task = ns[name]
        found.append((f"{name}:unknown", [name, *positionals(ctx), "--no-such-option"], "--no-such-option"))
        for arg in ctx.args.values():
            flag, key = long(arg), attr(arg)
            if arg.positional:
                found.append((f"{name}:missing-{key}", [name], flag))  # every argument missing: each is named
                if key in BAD:
                    found.append((f"{name}:bad-{key}", [name, *positionals(ctx, {key: BAD[key]})], BAD[key]))
                continue
            if arg.kind is bool:
                continue
            found.append((f"{name}:missing-{key}", [name, *positionals(ctx), flag], flag))
            if key in task.parsers:
                found.append((f"{name}:bad-{key}", [name, *positionals(ctx), flag, "x!"], flag))
            elif key in BAD:
                found.append((f"{name}:bad-{key}", [name, *positionals(ctx), flag, BAD[key]], BAD[key]))
    return found


CASES = cases()


def test_every_task_is_an_mlbatch_task():
    """Typed options and the one-letter rule hold only for MlbatchTask: use tasks.common.task."""
    plain = [name for name in CONTEXTS if not isinstance(ns[name], MlbatchTask)]
    assert not plain, f"tasks made with invoke's @task rather than tasks.common.task: {plain}"


def test_every_task_gets_an_ill_typed_case():
    """A task with a value-taking option has at least one ill-typed case (extend BAD for a new option)."""
    with_values = {n for n, ctx in CONTEXTS.items() if any(a.kind is not bool for a in ctx.args.values())}
    ill_typed = {case_id.split(":")[0] for case_id, _, _ in CASES if ":bad-" in case_id}
    assert with_values <= ill_typed, f"no ill-typed value tried for {sorted(with_values - ill_typed)}"


@pytest.mark.parametrize(("argv", "named"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_every_mistake_exits_100_with_one_line_naming_it(monkeypatch, capsys, tmp_path, argv, named):
    code, out, err = run(monkeypatch, capsys, tmp_path, *argv)
    assert code == 100, (code, out, err)
    assert "Traceback" not in err + out
    assert len(err.strip().splitlines()) == 1, err
    assert named in err, err
    assert not (tmp_path / "bucket").exists() or not any((tmp_path / "bucket").rglob("*")), "something was written"


def test_a_short_flag_has_one_meaning_across_tasks():
    meanings: dict[str, set[str]] = {}
    for ctx in CONTEXTS.values():
        for arg in ctx.args.values():
            for letter in (n for n in arg.names if len(n) == 1):
                meanings.setdefault(letter, set()).add(attr(arg))
    assert {letter: names for letter, names in meanings.items() if len(names) > 1} == {}
    assert all(SHORT_FLAGS.get(next(iter(names))) == letter for letter, names in meanings.items()), meanings


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["runs", "--stauts", "failed"], "mlbatch runs.list: unknown option --stauts: expected one of --job, --status"),
        (["runs", "--stauts", "failed"], "(did you mean --status?)"),
        (["images.prune", "--keep", "x"], "mlbatch: invalid --keep 'x': expected a whole number"),
        (["run-batch", "--jbo", "x"], "unknown option --jbo: expected one of --job"),
        (
            ["run-batch", "--job", "sleep", "--version", "v1.0.0", "--timeout", "ten"],
            "invalid --timeout 'ten': expected a duration",
        ),
        (["runs", "--profile"], "option --profile needs a value: settings profile"),
        (["run-batch", "--job", "sleep", "--version", "v1.0.0", "--param"], "option --param needs a value"),
        (["runs.show"], "missing RUN_ID (or --run-id): the run"),
        (["gc", "--dry-run=yes"], "unexpected 'yes'"),
        (["rnus"], "unknown task 'rnus': see mlbatch --list (did you mean runs?)"),
        (["runs", "--format", "yaml"], "invalid --format 'yaml': expected table or json"),
    ],
)
def test_the_issues_examples_name_the_option(monkeypatch, capsys, tmp_path, argv, expected):
    code, _, err = run(monkeypatch, capsys, tmp_path, *argv)
    assert (code, expected in err) == (100, True), err


@pytest.mark.parametrize(
    ("argv", "both"),
    [
        (["images.prune", "--keep", "x"], True),  # typed options: checked by the task, so invoke too
        (["run-batch", "--jbo", "x"], True),  # an option where an argument goes: the task refuses it
        (["run-batch", "--job", "train-digits", "--version", "v1.0.0", "--timeout", "10 minutes"], True),
        (["runs", "--stauts", "failed"], False),  # invoke's own parser: 1 under invoke, 100 under mlbatch
    ],
)
def test_as_a_user_types_them_in_a_shell(tmp_path, argv, both):
    env = {"INVOKE_MLBATCH_PROFILES_LOCAL_BUCKET": f"file://{tmp_path}", "PATH": str(Path(sys.executable).parent)}
    for program, expected in ((MLBATCH, 100), (INVOKE, 100 if both else 1)):
        done = subprocess.run([program, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == expected, (program, done.stderr)
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_shell_completion_offers_the_tasks_and_their_options():
    script = subprocess.run([MLBATCH, "--print-completion-script", "bash"], capture_output=True, text=True, check=True)
    assert "complete -F _complete_mlbatch" in script.stdout and "mlbatch --complete" in script.stdout
    done = subprocess.run([MLBATCH, "--complete", "--", "mlbatch", "logs", "--"], cwd=ROOT, capture_output=True, text=True)
    assert {"--run-id", "--follow", "--profile"} <= set(done.stdout.split())
    tasks = subprocess.run([MLBATCH, "--complete", "--", "mlbatch"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert {"doctor", "runs.download", "runs.cost", "jobs.new", "run-batch"} <= set(tasks)


def test_ctrl_c_in_a_task_exits_109_not_1(tmp_path, monkeypatch, capsys):
    """invoke exits 1 on a KeyboardInterrupt, a job's code; mlbatch says cancelled (109)."""
    # not named tasks.py: invoke's loader puts the collection's module in sys.modules
    (tmp_path / "interrupted_tasks.py").write_text(
        "from invoke import task\n\n\n@task\ndef wait(c):\n    raise KeyboardInterrupt\n"
    )
    monkeypatch.chdir(tmp_path)
    program = MlbatchProgram(name="mlbatch", binary="mlbatch", binary_names=["mlbatch"])
    with pytest.raises(SystemExit) as ended:
        program.run(["mlbatch", "--search-root", str(tmp_path), "--collection", "interrupted_tasks", "wait"])
    assert ended.value.code == 109 and capsys.readouterr().err == "mlbatch: interrupted (Ctrl-C)\n"
