"""The Cloud Function's settings travel as one variable each (env.yaml of `invoke schedule.export`)
and come back as the CLI would load them; its requirements.txt is the package's and the trigger extra's."""

from __future__ import annotations

import dataclasses

import pytest

from mlbatch.core.errors import BadInput
from mlbatch.core.settings import load_settings
from mlbatch.triggers import deploy
from tests.conftest import ROOT, repo_config


def gcp_settings():
    config = repo_config()
    config["profile"] = "gcp"
    config["profiles"]["gcp"].update(
        project="my-ml-project",
        bucket="gs://my-ml-project-mlbatch",
        registry="europe-west4-docker.pkg.dev/my-ml-project/mlbatch",
        service_account="mlbatch-runner@my-ml-project.iam.gserviceaccount.com",
        subnetwork="runs",
        cloud_nat=True,
        ssh_port=2222,
    )
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
