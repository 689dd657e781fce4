from pathlib import Path

import pytest

from mlbatch.core.errors import BadInput
from mlbatch.core.settings import load_settings
from tests.conftest import ROOT, repo_config

GCP = {
    "project": "my-ml-project",
    "region": "europe-west4",
    "zones": ["europe-west4-a", "europe-west4-b"],
    "bucket": "gs://my-ml-project-mlbatch",
    "registry": "europe-west4-docker.pkg.dev/my-ml-project/mlbatch",
    "service_account": "mlbatch-runner@my-ml-project.iam.gserviceaccount.com",
}


def gcp_config(**overrides):
    config = repo_config()
    config["profile"] = "gcp"
    config["profiles"]["gcp"].update(GCP, **overrides)
    return config


def test_repo_defaults_are_the_local_profile():
    settings = load_settings(repo_config(), ROOT, env={})
    assert settings.profile == "local"
    assert settings.bucket == f"file://{ROOT / '.mlbatch' / 'bucket'}"
    assert settings.registry == "127.0.0.1:5000"


def test_a_complete_gcp_profile_loads():
    settings = load_settings(gcp_config(), ROOT, env={})
    assert settings.zones == ("europe-west4-a", "europe-west4-b")
    assert not settings.is_local


def test_unknown_profile():
    config = repo_config()
    config["profile"] = "prod"
    with pytest.raises(BadInput, match="mlbatch.profile 'prod': expected one of local, gcp"):
        load_settings(config, ROOT, env={})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("project", None, "project"),
        ("zones", ["us-central1-a"], "zones"),
        ("bucket", "file:///tmp/x", "gcp profile needs gs://"),
        ("service_account", "me@gmail.com", "service_account"),
        ("bucket", "gs://UPPER", "bucket"),
    ],
)
def test_bad_gcp_values_name_the_key(key, value, message):
    with pytest.raises(BadInput, match=message):
        load_settings(gcp_config(**{key: value}), ROOT, env={})


def test_production_refuses_emulators():
    with pytest.raises(BadInput, match="STORAGE_EMULATOR_HOST"):
        load_settings(gcp_config(), ROOT, env={"STORAGE_EMULATOR_HOST": "http://127.0.0.1:4443"})
    with pytest.raises(BadInput, match="refused outside the test profile"):
        load_settings(gcp_config(compute_endpoint="http://127.0.0.1:9"), ROOT, env={})


def test_the_test_profile_is_gcp_against_emulators():
    config = gcp_config(compute_endpoint="http://127.0.0.1:9")
    config["profile"] = "test"
    config["profiles"]["test"] = config["profiles"].pop("gcp")
    settings = load_settings(config, ROOT, env={"STORAGE_EMULATOR_HOST": "http://127.0.0.1:4443"})
    assert settings.compute_endpoint == "http://127.0.0.1:9" and not settings.is_local


def test_local_profile_allows_an_emulator():
    config = repo_config()
    config["profiles"]["local"]["bucket"] = "gs://mlbatch-emulated"
    settings = load_settings(config, ROOT, env={"STORAGE_EMULATOR_HOST": "http://127.0.0.1:4443"})
    assert settings.is_local and settings.bucket == "gs://mlbatch-emulated"


def test_missing_ca_bundle_is_refused(tmp_path: Path):
    config = repo_config()
    config["profiles"]["local"]["ca_bundle"] = str(tmp_path / "missing.pem")
    with pytest.raises(BadInput, match="ca_bundle .* is not a file"):
        load_settings(config, ROOT, env={})
