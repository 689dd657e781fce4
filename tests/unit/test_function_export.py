"""`invoke schedule.export`'s gcloud commands as the argv lists they are (never a shell string),
and the IAM policy files they read: publishers named one by one, the function deployed with
internal ingress, no unauthenticated calls, its own identity and its trigger's, the trigger's
identity allowed to invoke this function only, the function's identity granted actAs on the
runner and the bucket prefixes it needs. Through the CLI: tests/integration/test_exports.py."""

from __future__ import annotations

import json
import re
import shlex

import pytest

from mlbatch.core.errors import BadInput
from mlbatch.triggers import access, schedule
from mlbatch.triggers.common import load_catalog
from tests.unit.test_function_settings import RUNNER, gcp_settings

TRIGGER = "mlbatch-trigger@my-ml-project.iam.gserviceaccount.com"
INVOKER = "mlbatch-trigger-invoker@my-ml-project.iam.gserviceaccount.com"


def commands(tmp_path, settings=None, job="train-digits", version="v1.4.0", params=None):
    settings = settings or gcp_settings()
    chosen = load_catalog(settings)[job]
    return schedule.gcloud_commands(settings, chosen, "0 3 * * *", version, params or {}, "Etc/UTC", tmp_path)


def find(argvs, *head):
    (argv,) = [a for a in argvs if a[: len(head)] == list(head)]
    return argv


def flag(argv, name):
    assert argv.count(name) == 1, (name, argv)
    return argv[argv.index(name) + 1]


def test_the_export_is_argv_lists_in_the_order_they_must_run(tmp_path):
    argvs = commands(tmp_path, params={"n_estimators": "200"})
    assert all(isinstance(argv, list) and all(isinstance(a, str) for a in argv) for argv in argvs)
    assert [argv[1:4] for argv in argvs] == [
        ["pubsub", "topics", "create"],
        ["pubsub", "topics", "set-iam-policy"],  # before anyone but the named may publish...
        ["iam", "service-accounts", "add-iam-policy-binding"],
        ["projects", "add-iam-policy-binding", "my-ml-project"],
        ["storage", "buckets", "add-iam-policy-binding"],
        ["storage", "buckets", "add-iam-policy-binding"],
        ["functions", "deploy", "mlbatch-trigger"],  # ...and before the function exists
        ["functions", "add-invoker-policy-binding", "mlbatch-trigger"],  # the function must exist
        ["scheduler", "jobs", "create"],  # last: the first message finds everything in place
    ]
    printed = schedule.script(argvs)
    assert [shlex.split(line) for line in printed.splitlines()] == argvs, "each line is its argv, quoted"


def test_the_function_is_internal_authenticated_and_runs_as_its_own_identity(tmp_path):
    deploy = find(commands(tmp_path), "gcloud", "functions", "deploy")
    assert flag(deploy, "--ingress-settings") == "internal-only"
    assert "--no-allow-unauthenticated" in deploy and "--allow-unauthenticated" not in deploy
    assert flag(deploy, "--service-account") == TRIGGER != RUNNER, "the function's identity is not the runner's"
    assert flag(deploy, "--trigger-service-account") == INVOKER
    assert flag(deploy, "--trigger-topic") == "mlbatch-trigger" and "--retry" in deploy
    assert flag(deploy, "--env-vars-file") == str(tmp_path / "env.yaml")


def test_only_the_trigger_identity_may_invoke_the_function(tmp_path):
    invoker = find(commands(tmp_path), "gcloud", "functions", "add-invoker-policy-binding")
    assert invoker[3] == "mlbatch-trigger" and flag(invoker, "--member") == f"serviceAccount:{INVOKER}"
    assert flag(invoker, "--region") == "europe-west4" and flag(invoker, "--project") == "my-ml-project"


def test_only_the_named_principals_may_publish(tmp_path):
    argvs = commands(tmp_path)
    files = access.write_files(gcp_settings(), tmp_path)
    topic = find(argvs, "gcloud", "pubsub", "topics", "set-iam-policy")
    assert topic[4:6] == ["mlbatch-trigger", str(files.topic_policy)]
    assert json.loads(files.topic_policy.read_text()) == {
        "bindings": [
            {
                "role": "roles/pubsub.publisher",
                "members": ["group:ml-ops@example.com", "serviceAccount:ci@my-ml-project.iam.gserviceaccount.com"],
            }
        ]
    }, "the whole policy: set, not added to, so a grant made by hand earlier does not survive"
    access.write_files(gcp_settings(trigger_publishers=[]), tmp_path)
    assert json.loads(files.topic_policy.read_text()) == {"bindings": []}, "none named: nobody on the topic itself"


def test_the_function_identity_may_act_as_the_runner_and_touch_only_its_prefixes(tmp_path):
    argvs = commands(tmp_path)
    member = f"serviceAccount:{TRIGGER}"
    act_as = find(argvs, "gcloud", "iam", "service-accounts", "add-iam-policy-binding")
    assert act_as[4] == RUNNER and (flag(act_as, "--member"), flag(act_as, "--role")) == (member, "roles/iam.serviceAccountUser")
    compute = find(argvs, "gcloud", "projects", "add-iam-policy-binding")
    assert (flag(compute, "--member"), flag(compute, "--role")) == (member, "roles/compute.instanceAdmin.v1")
    files = access.write_files(gcp_settings(), tmp_path)
    bucket_grants = [a for a in argvs if a[1:3] == ["storage", "buckets"]]
    assert [(a[4], flag(a, "--member"), flag(a, "--role"), flag(a, "--condition-from-file")) for a in bucket_grants] == [
        ("gs://my-ml-project-mlbatch", member, "roles/storage.objectViewer", str(files.reads)),
        ("gs://my-ml-project-mlbatch", member, "roles/storage.objectUser", str(files.writes)),
    ]
    objects = "projects/_/buckets/my-ml-project-mlbatch/objects/"
    assert json.loads(files.reads.read_text())["expression"] == (
        f'resource.name == "projects/_/buckets/my-ml-project-mlbatch" || resource.name.startsWith("{objects}releases/")'
    )
    assert json.loads(files.writes.read_text())["expression"] == " || ".join(
        f'resource.name.startsWith("{objects}{area}/")' for area in ("runs", "idempotency", "concurrency")
    ), "never releases/ or batch_code/"


def test_a_bucket_prefix_is_part_of_the_object_names(tmp_path):
    files = access.write_files(gcp_settings(bucket="gs://shared-bucket/team-a"), tmp_path)
    reads = json.loads(files.reads.read_text())["expression"]
    assert 'resource.name.startsWith("projects/_/buckets/shared-bucket/objects/team-a/releases/")' in reads
    argvs = commands(tmp_path, gcp_settings(bucket="gs://shared-bucket/team-a"))
    assert {a[4] for a in argvs if a[1:3] == ["storage", "buckets"]} == {"gs://shared-bucket"}


def test_the_message_carries_the_deployments_version(tmp_path):
    scheduler = find(commands(tmp_path), "gcloud", "scheduler", "jobs", "create")
    assert json.loads(flag(scheduler, "--message-body"))["version"] == "v1.4.0"


@pytest.mark.parametrize(
    ("settings", "job", "version", "message"),
    [
        ({}, "fail-on-purpose", "v1.4.0", "job 'fail-on-purpose' is not in mlbatch.profiles.gcp.trigger_jobs"),
        ({}, "train-digits", "latest", "--version latest differs from mlbatch.profiles.gcp.trigger_version (v1.4.0)"),
        ({"trigger_service_account": None}, "train-digits", "v1.4.0", "trigger_service_account is not set"),
        ({"trigger_invoker_service_account": None}, "train-digits", "v1.4.0", "trigger_invoker_service_account is not set"),
    ],
)
def test_an_export_whose_function_would_refuse_its_schedule_is_refused_before_writing(tmp_path, settings, job, version, message):
    chosen = gcp_settings(**settings)
    out = tmp_path / "function"
    with pytest.raises(BadInput, match=re.escape(message)):
        schedule.export(chosen, load_catalog(chosen)[job], "0 3 * * *", version, {}, "Etc/UTC", out)
    assert not out.exists(), "nothing written"


def test_the_export_writes_the_folder_env_and_policy_files(tmp_path):
    settings = gcp_settings()
    out = tmp_path / "function"
    argvs = schedule.export(settings, load_catalog(settings)["train-digits"], "0 3 * * *", None, {}, "Etc/UTC", out)
    assert sorted(p.name for p in out.iterdir()) == ["env.yaml", "iam", "source"]
    assert sorted(p.name for p in (out / "iam").iterdir()) == ["topic-policy.json", "trigger-reads.json", "trigger-writes.json"]
    assert json.loads(flag(find(argvs, "gcloud", "scheduler"), "--message-body"))["version"] == "v1.4.0", "the default"
