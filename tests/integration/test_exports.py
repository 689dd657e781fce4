"""`invoke rundeck.export` and `invoke schedule.export` through the CLI, checked against the catalog."""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import yaml

from mlbatch.core.catalog import parse_catalog
from mlbatch.core.errors import ExitCode
from mlbatch.triggers.pubsub import decode
from tests.conftest import ROOT
from tests.integration.helpers import INVOKE, invoke
from tests.support import rundeck

CATALOG = parse_catalog((ROOT / "batch_code" / "jobs.yaml").read_text())


def test_rundeck_export_has_a_job_per_catalog_job_with_its_params(tmp_path):
    result = invoke("file:///tmp/unused", "rundeck.export", "--output-dir", str(tmp_path), "--project-dir", "/srv/mlbatch")
    assert result.returncode == 0, result.stderr
    assert sorted(p.stem for p in tmp_path.glob("*.yaml")) == sorted(CATALOG)
    for name, job in CATALOG.items():
        (definition,) = yaml.safe_load((tmp_path / f"{name}.yaml").read_text())
        assert definition["name"] == name and definition["group"] == "mlbatch"
        assert "| 113 | skipped" in definition["description"] and "| 105 |" in definition["description"]
        options = {o["name"]: o for o in definition["options"]}
        assert list(options) == ["version", *(p.name for p in job.params)]
        assert options["version"]["value"] == "latest"
        for param in job.params:
            option = options[param.name]
            assert option["value"] == str(param.default)
            assert re.fullmatch(option["regex"], option["value"]), "the default passes its own regex"
            for hostile in ("x'; rm -rf /", "1' '2"):
                assert not re.fullmatch(option["regex"], hostile), f"{param.name} refuses {hostile!r}"
        (step,) = definition["sequence"]["commands"]
        defaults = {name: o["value"] for name, o in options.items()}
        argv = shlex.split(rundeck.substitute(step["exec"], defaults, "4711"))
        expected_params = [a for p in job.params for a in ("--param", f"{p.name}={p.default}")]
        assert argv == [
            "invoke", "--search-root", "/srv/mlbatch", "run-batch", "--job", name, "--version", "latest",
            *expected_params, "--idempotency-key", "rundeck-4711",
        ]  # fmt: skip


def test_rundeck_export_wants_an_absolute_project_dir(tmp_path):
    result = invoke("file:///tmp/unused", "rundeck.export", "--output-dir", str(tmp_path), "--project-dir", "rel/dir")
    assert result.returncode == ExitCode.BAD_INPUT and "expected an absolute path" in result.stderr
    assert list(tmp_path.iterdir()) == []


def schedule_export(*args, out: Path):
    env = {**os.environ, "INVOKE_MLBATCH_PROFILES_TEST_BUCKET": "gs://mlbatch-test-bucket"}
    argv = [INVOKE, "schedule.export", "--profile", "test", "--output-dir", str(out), *args]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_schedule_export_prints_topic_function_and_scheduler_job(tmp_path):
    out = tmp_path / "function"
    result = schedule_export("--job", "train-digits", "--cron", "0 3 * * *", "--param", "n_estimators=200", out=out)
    assert result.returncode == 0, result.stderr
    argvs = [shlex.split(line) for line in result.stdout.splitlines()]
    (topic,) = [a for a in argvs if a[1:4] == ["pubsub", "topics", "create"]]
    (function,) = [a for a in argvs if a[1:3] == ["functions", "deploy"]]
    (scheduler,) = [a for a in argvs if a[1:3] == ["scheduler", "jobs"]]
    assert argvs[0] == topic and argvs[-1] == scheduler, "the topic first, the schedule last"
    assert topic[:5] == ["gcloud", "pubsub", "topics", "create", "mlbatch-trigger"]
    assert function[:4] == ["gcloud", "functions", "deploy", "mlbatch-trigger"]
    assert function[function.index("--entry-point") + 1] == "pubsub_trigger"
    assert function[function.index("--source") + 1] == str(out / "source")
    assert function[function.index("--env-vars-file") + 1] == str(out / "env.yaml")
    assert (out / "source" / "main.py").is_file() and (out / "env.yaml").is_file()
    assert function[function.index("--trigger-topic") + 1] == "mlbatch-trigger" and "--retry" in function
    assert function[function.index("--service-account") + 1] == "mlbatch-trigger@mlbatch-test.iam.gserviceaccount.com"
    assert function[function.index("--ingress-settings") + 1] == "internal-only" and "--no-allow-unauthenticated" in function
    for policy in ("topic-policy.json", "trigger-reads.json", "trigger-writes.json"):
        assert str(out / "iam" / policy) in result.stdout, policy
    assert scheduler[:6] == ["gcloud", "scheduler", "jobs", "create", "pubsub", "mlbatch-train-digits"]
    option = {scheduler[i]: scheduler[i + 1] for i in range(6, len(scheduler) - 1) if scheduler[i].startswith("--")}
    assert option["--schedule"] == "0 3 * * *" and option["--topic"] == "mlbatch-trigger"
    assert option["--project"] == "mlbatch-test" and option["--location"] == "europe-west4"
    body = json.loads(option["--message-body"])
    assert body == {"job": "train-digits", "version": "latest", "params": {"n_estimators": 200}}
    # What the function receives when Cloud Scheduler publishes that body:
    data = base64.b64encode(option["--message-body"].encode()).decode()
    trigger = decode({"message": {"data": data, "messageId": "981", "publishTime": "2026-11-25T03:00:00.123456789Z"}})
    assert (trigger.job, trigger.version, trigger.params, trigger.idempotency_key) == (
        "train-digits",
        "latest",
        ("n_estimators=200",),
        "pubsub-981",
    )


def test_schedule_export_refuses_bad_input(tmp_path):
    for args, message in [
        (("--job", "train-digits", "--cron", "0 3 * *"), "five unix-cron fields"),
        (("--job", "no-such-job", "--cron", "0 3 * * *"), "unknown job 'no-such-job'"),
        (("--job", "train-digits", "--cron", "0 3 * * *", "--param", "n_estimators=many"), "expected a int"),
        (("--job", "train-digits", "--cron", "0 3 * * *", "--version", "v1"), "invalid version 'v1'"),
        (("--job", "train-digits", "--cron", "0 3 * * *", "--time-zone", "UTC; rm"), "invalid --time-zone"),
        (
            ("--job", "fail-on-purpose", "--cron", "0 3 * * *"),
            "job 'fail-on-purpose' is not in mlbatch.profiles.test.trigger_jobs",
        ),
        (
            ("--job", "train-digits", "--cron", "0 3 * * *", "--version", "v1.0.0"),
            "differs from mlbatch.profiles.test.trigger_version",
        ),
    ]:
        result = schedule_export(*args, out=tmp_path / "function")
        assert result.returncode == ExitCode.BAD_INPUT, (args, result.stderr)
        assert message in result.stderr and result.stdout == ""
        assert not (tmp_path / "function").exists(), "nothing written"
