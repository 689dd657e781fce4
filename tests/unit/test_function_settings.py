"""The Cloud Function's settings travel as one variable each (env.yaml of `invoke schedule.export`)
and come back as the CLI would load them; its requirements.txt is the package's and the trigger extra's."""

from __future__ import annotations

import dataclasses
import re

import pytest

from mlbatch.core.errors import BadInput
from mlbatch.core.settings import load_settings
from mlbatch.triggers import deploy
from tests.conftest import ROOT, repo_config


def gcp_settings(**changes):
    """A filled-in gcp profile, with a deployable function (its policy and identities); `changes` on top."""
    config = repo_config()
    config["profile"] = "gcp"
    values = dict(
        project="my-ml-project",
        bucket="gs://my-ml-project-mlbatch",
        registry="europe-west4-docker.pkg.dev/my-ml-project/mlbatch",
        service_account="mlbatch-runner@my-ml-project.iam.gserviceaccount.com",
        subnetwork="runs",
        cloud_nat=True,
        ssh_port=2222,
        trigger_jobs=["train-digits", "sleep"],
        trigger_version="v1.4.0",
        trigger_max_age_seconds=1800,
        trigger_service_account="mlbatch-trigger@my-ml-project.iam.gserviceaccount.com",
        trigger_invoker_service_account="mlbatch-trigger-invoker@my-ml-project.iam.gserviceaccount.com",
        trigger_publishers=["serviceAccount:ci@my-ml-project.iam.gserviceaccount.com", "group:ml-ops@example.com"],
    )
    config["profiles"]["gcp"].update(values | changes)
    return load_settings(config, ROOT, env={})


def test_every_setting_of_the_profile_comes_back_from_the_environment():
    settings = gcp_settings()
    env = deploy.environment(settings)
    assert all(isinstance(v, str) for v in env.values())
    assert env["MLBATCH_SETTINGS_PROJECT"] == "my-ml-project", "today's function read project: null"
    back = deploy.settings_from_environment(env, ROOT)
    for field in dataclasses.fields(settings):
        if field.name not in deploy.NOT_EXPORTED:
            assert getattr(back, field.name) == getattr(settings, field.name), field.name
    assert (back.zones, back.cloud_nat, back.ssh_port) == (("europe-west4-a", "europe-west4-b", "europe-west4-c"), True, 2222)
    assert (back.trigger_jobs, back.trigger_version, back.trigger_max_age_seconds) == (("train-digits", "sleep"), "v1.4.0", 1800)
    assert env["MLBATCH_SETTINGS_TRIGGER_JOBS"] == '["train-digits", "sleep"]', "the allowlist travels to the function"


def test_a_function_deployed_without_a_policy_refuses_every_job():
    """An env.yaml from before the trust settings (or with none) allows no job: closed, not open."""
    env = {k: v for k, v in deploy.environment(gcp_settings()).items() if not k.startswith("MLBATCH_SETTINGS_TRIGGER_")}
    back = deploy.settings_from_environment(env, ROOT)
    assert (back.trigger_jobs, back.trigger_version, back.trigger_max_age_seconds) == ((), "latest", 3600)


RUNNER = "mlbatch-runner@my-ml-project.iam.gserviceaccount.com"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"trigger_jobs": "sleep"}, "invalid mlbatch.profiles.gcp.trigger_jobs 'sleep': expected a list of strings"),
        ({"trigger_jobs": ["Sleep Job"]}, "invalid mlbatch.profiles.gcp.trigger_jobs: invalid job name 'Sleep Job'"),
        ({"trigger_version": "1.4"}, "invalid mlbatch.profiles.gcp.trigger_version: invalid version '1.4'"),
        ({"trigger_max_age_seconds": 10}, "trigger_max_age_seconds 10: expected seconds from 60 to 604800"),
        ({"trigger_max_age_seconds": "1h"}, "trigger_max_age_seconds '1h'"),
        ({"trigger_service_account": RUNNER}, "it is also service_account; each identity is an account of its own"),
        (
            {"trigger_invoker_service_account": "mlbatch-trigger@my-ml-project.iam.gserviceaccount.com"},
            "it is also trigger_service_account",
        ),
        ({"trigger_service_account": "mlbatch-trigger"}, "expected NAME@PROJECT.iam.gserviceaccount.com"),
        ({"trigger_publishers": ["allUsers"]}, "trigger_publishers entry 'allUsers': expected a named principal"),
        ({"trigger_publishers": ["allAuthenticatedUsers"]}, "expected a named principal"),
        ({"trigger_publishers": ["domain:example.com"]}, "expected a named principal"),
    ],
)
def test_a_bad_trigger_setting_is_refused_naming_it(change, message):
    with pytest.raises(BadInput, match=re.escape(message)):
        gcp_settings(**change)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"MLBATCH_SETTINGS_PROFILE": ""}, "MLBATCH_SETTINGS_PROFILE is not set"),
        ({"MLBATCH_SETTINGS_ZONES": "europe-west4-a,europe-west4-b"}, "invalid MLBATCH_SETTINGS_ZONES"),
        ({"MLBATCH_SETTINGS_PROJECT": "My Project"}, "invalid mlbatch.profiles.gcp.project"),
        ({"MLBATCH_SETTINGS_COMPUTE_ENDPOINT": "http://127.0.0.1:1"}, "is for tests"),
    ],
)
def test_a_bad_variable_is_refused_naming_it(change, message):
    env = {**deploy.environment(gcp_settings()), **change}
    with pytest.raises(BadInput, match=message):
        deploy.settings_from_environment(env, ROOT)


def test_requirements_are_the_package_and_trigger_dependencies():
    wanted = deploy.requirements(ROOT)
    for requirement in ("functions-framework>=3.5", "google-cloud-compute>=1.14", "google-cloud-storage>=2.14", "PyYAML>=6"):
        assert requirement in wanted
    assert not any(r.startswith(("mlbatch", "pytest", "ansible")) for r in wanted), wanted
