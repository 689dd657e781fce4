"""The three identities (mlbatch.iam.plan), the commands that set them up (iam.setup) and the
check that the runner cannot write releases (iam.policy), without a network. That the grants
really separate the identities is shown against the enforcing bucket stand-in
(tests/integration/test_identities.py)."""

from __future__ import annotations

import json
import shlex
import subprocess

import pytest
import yaml

from mlbatch.core import access
from mlbatch.core.catalog import parse_catalog
from mlbatch.core.errors import BadInput
from mlbatch.core.manifest import manifest_key
from mlbatch.core.names import instance_name
from mlbatch.core.runs import idempotency_record_key, spec_key
from mlbatch.core.settings import load_settings
from mlbatch.iam import plan, policy
from mlbatch.iam.setup import export, setup_plan
from mlbatch.run.overlap import slot_key
from tests.conftest import ROOT
from tests.integration.helpers import INVOKE
from tests.unit.test_settings import GCP, gcp_config

RUNNER = GCP["service_account"]
BUCKET = GCP["bucket"]
OBJECTS = "projects/_/buckets/my-ml-project-mlbatch/objects/"
RELEASE = "serviceAccount:mlbatch-release@my-ml-project.iam.gserviceaccount.com"
CATALOG = parse_catalog(
    """
jobs:
  train:
    container: trainer
    command: [python, train.py]
    google_access: {read: [datasets/digits/, "datasets/{job}/cache/"], write: ["runs/{job}/{run_id}/scratch/"]}
"""
)


@pytest.fixture
def settings():
    return load_settings(gcp_config(), ROOT, env={})


def bindings(people):
    """The bucket bindings the plan makes, as getIamPolicy (version 3) returns them."""
    out = []
    for person in people:
        for grant in person.grants:
            if grant.on == plan.BUCKET:
                binding = {"role": grant.role_name(GCP["project"]), "members": [person.member]}
                if grant.condition:
                    binding["condition"] = {"title": grant.condition.title, "expression": grant.condition.expression}
                out.append(binding)
    return out


def test_the_folders_are_the_keys_the_code_writes():
    assert manifest_key("v1.0.0").startswith(access.RELEASES)
    assert spec_key("train-20260101-000000-abcd").startswith(access.RUNS)
    assert idempotency_record_key("train", "k").startswith(access.IDEMPOTENCY)
    assert slot_key("train").startswith(access.CONCURRENCY)
    assert instance_name("train-20260101-000000-abcd", 1).startswith(plan.INSTANCE_PREFIX)


def test_every_bucket_grant_is_conditioned_on_object_names(settings):
    for person in plan.identities(settings, CATALOG):
        for grant in person.grants:
            if grant.on == plan.BUCKET and grant.role.startswith("roles/storage.object"):
                assert grant.condition and "resource.name.startsWith(" in grant.condition.expression, (person.key, grant)


def test_the_runner_reads_what_its_jobs_declare_and_writes_only_runs(settings):
    release, runner, trigger = plan.identities(settings, CATALOG)
    reads, writes = (g.condition.expression for g in runner.grants[:2])
    assert '"projects/_/buckets/my-ml-project-mlbatch/objects/datasets/digits/"' in reads
    assert '"projects/_/buckets/my-ml-project-mlbatch/objects/datasets/"' in reads  # up to the placeholder's folder
    assert writes == f'resource.name.startsWith("{OBJECTS}runs/")'
    assert policy.runner_writes_releases(bindings((release, runner, trigger)), RUNNER, BUCKET) == []


def test_a_bucket_prefix_is_part_of_every_object_name():
    settings = load_settings(gcp_config(bucket="gs://shared-bucket/teams/ml"), ROOT, env={})
    _, runner, _ = plan.identities(settings, CATALOG)
    assert '"projects/_/buckets/shared-bucket/objects/teams/ml/runs/"' in runner.grants[1].condition.expression
    trigger = plan.identities(settings, CATALOG)[2]
    assert 'startsWith("teams/ml/releases/")' in trigger.grants[0].condition.expression  # the list half


@pytest.mark.parametrize(
    "binding",
    [
        {"role": "roles/storage.objectAdmin", "members": [f"serviceAccount:{RUNNER}"]},  # the README's old grant
        {"role": "roles/storage.objectUser", "members": ["allAuthenticatedUsers"]},
        {
            "role": "roles/storage.objectCreator",
            "members": [f"serviceAccount:{RUNNER}"],
            "condition": {"expression": f'resource.name.startsWith("{OBJECTS}rel")'},
        },
        {
            "role": "roles/storage.objectUser",
            "members": [f"serviceAccount:{RUNNER}"],
            "condition": {"expression": 'resource.name.endsWith(".json")'},  # not understood: not shown harmless
        },
        {"role": "projects/my-ml-project/roles/custom", "members": [f"serviceAccount:{RUNNER}"]},
    ],
)
def test_a_runner_grant_reaching_releases_is_found(binding):
    findings = policy.runner_writes_releases([binding], RUNNER, BUCKET)
    assert len(findings) == 1 and findings[0].role == binding["role"]


@pytest.mark.parametrize(
    "expression",
    [
        f'resource.name.startsWith("{OBJECTS}runs/")',
        'resource.type == "storage.googleapis.com/Object" && ' + f'resource.name.startsWith("{OBJECTS}runs/")',
        'resource.name.startsWith("projects/_/buckets/other-bucket/objects/releases/")',
        'api.getAttribute("storage.googleapis.com/objectListPrefix", "").startsWith("releases/")',  # lists, never writes
        f'(resource.name.startsWith("{OBJECTS}releases/") && resource.type == "storage.googleapis.com/Bucket")',
    ],
)
def test_a_runner_grant_away_from_releases_is_not_reported(expression):
    binding = {
        "role": "roles/storage.objectAdmin",
        "members": [f"serviceAccount:{RUNNER}"],
        "condition": {"expression": expression},
    }
    assert policy.runner_writes_releases([binding], RUNNER, BUCKET) == []


def test_read_only_roles_and_other_members_are_not_reported():
    assert (
        policy.runner_writes_releases(
            [
                {"role": "roles/storage.objectViewer", "members": [f"serviceAccount:{RUNNER}", "allUsers"]},
                {
                    "role": "roles/storage.objectAdmin",
                    "members": ["serviceAccount:mlbatch-release@my-ml-project.iam.gserviceaccount.com"],
                },
            ],
            RUNNER,
            BUCKET,
        )
        == []
    )


def test_setup_prints_argv_lists_and_writes_the_conditions(settings, tmp_path):
    made = setup_plan(settings, CATALOG, tmp_path)
    assert made.condition_files and not any(p.exists() for p in made.condition_files)  # written by export only
    script = export(settings, tmp_path)
    commands = [shlex.split(line) for line in script.splitlines() if line and not line.startswith("#")]
    assert commands and all(argv[0] == "gcloud" for argv in commands)
    grants = [argv for argv in commands if argv[1:3] in (["storage", "buckets"], ["projects", "add-iam-policy-binding"])]
    for argv in grants:
        if "--condition-from-file" in argv:
            condition = json.loads((tmp_path / argv[argv.index("--condition-from-file") + 1]).read_text())
            assert set(condition) == {"title", "description", "expression"}
    runner_bucket_grants = [
        a
        for a in commands
        if a[:4] == ["gcloud", "storage", "buckets", "add-iam-policy-binding"] and RUNNER in a[a.index("--member") + 1]
    ]
    assert len(runner_bucket_grants) == 2 and all("--condition-from-file" in a for a in runner_bucket_grants)
    assert ["gcloud", "storage", "buckets", "update", BUCKET, "--uniform-bucket-level-access"] in commands


@pytest.mark.parametrize("network_project", ["", "shared-vpc-host"])
def test_the_subnetwork_is_granted_on_the_project_that_owns_it(tmp_path, network_project):
    shared = load_settings(gcp_config(network_project=network_project or None), ROOT, env={})
    owner = network_project or GCP["project"]
    commands = [shlex.split(line) for line in export(shared, tmp_path).splitlines() if line and not line.startswith("#")]
    subnet = [a for a in commands if "roles/compute.networkUser" in a]
    assert len(subnet) == 2  # the release (bake and test VMs) and the trigger (run VMs)
    assert all(a[:4] == ["gcloud", "projects", "add-iam-policy-binding", owner] for a in subnet), subnet


def test_setup_refuses_what_it_cannot_grant_before_writing(tmp_path):
    local = load_settings(gcp_config(registry="127.0.0.1:5000"), ROOT, env={})
    with pytest.raises(BadInput, match="not an Artifact Registry repository"):
        export(local, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(BadInput, match="invalid service account"):
        plan.identities(load_settings(gcp_config(), ROOT, env={}), CATALOG, release_account="root@example.com")


def test_the_task_prints_the_commands(tmp_path):
    env = {f"INVOKE_MLBATCH_PROFILES_GCP_{k.upper()}": v for k, v in GCP.items() if isinstance(v, str)}
    result = subprocess.run(
        [INVOKE, "iam.setup", "--output-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**env, "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert "gcloud iam service-accounts create mlbatch-trigger --project my-ml-project" in result.stdout
    assert "print-only: nothing was run" in result.stdout


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"write": ["releases/v1/"]}, r"google_access.write .* must be a prefix under runs/.*\(not 'releases/v1/'\)"),
        ({"write": ["runs"]}, r"google_access.write .* must be an object prefix .*\(not 'runs'\)"),
        ({"read": ["data/../releases/"]}, r"google_access.read .* must be an object prefix"),
        ({"read": ["/etc/"]}, r"google_access.read .* must be an object prefix"),
        ({"read": "datasets/"}, r"google_access.read 'datasets/' must be object prefixes"),
        ({"reads": ["datasets/"]}, r"unknown keys \['reads'\]"),
        ({"read": [f"d{i}/" for i in range(11)]}, "at most 10"),
    ],
)
def test_bad_google_access_is_refused_naming_the_job(spec, message):
    text = yaml.safe_dump({"jobs": {"train": {"container": "trainer", "command": ["python", "t.py"], "google_access": spec}}})
    with pytest.raises(BadInput, match=message) as caught:
        parse_catalog(text)
    assert "jobs.train.google_access" in str(caught.value)


def test_a_job_access_becomes_its_token_boundary():
    declared = CATALOG["train"].google_access.for_run("train", "train-20260101-000000-abcd")
    assert declared.write == ("runs/train/train-20260101-000000-abcd/scratch/",)
    rules = access.access_boundary(BUCKET, declared)["accessBoundary"]["accessBoundaryRules"]
    assert [r["availablePermissions"] for r in rules] == [
        ["inRole:roles/storage.objectViewer"],
        ["inRole:roles/storage.objectUser"],
    ]
    assert {r["availableResource"] for r in rules} == {"//storage.googleapis.com/projects/_/buckets/my-ml-project-mlbatch"}
    assert "objectListPrefix" in rules[0]["availabilityCondition"]["expression"]
    assert access.access_boundary(BUCKET, access.GoogleAccess()) == {"accessBoundary": {"accessBoundaryRules": []}}


def test_the_release_preflight_asks_the_project_only_for_what_the_plan_grants_there(settings):
    from mlbatch.release import preflight

    roles_below_project = {
        g.role for g in plan.identities(settings, CATALOG)[0].grants if g.on in (plan.REPOSITORY, plan.RUNNER_ACCOUNT)
    }
    assert not {role for role in preflight.PERMISSIONS.values() if role in roles_below_project}
