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


@pytest.mark.parametrize("key", ["resource_manager_endpoint", "service_usage_endpoint"])
def test_preflight_endpoints_are_refused_outside_the_test_profile(key):
    with pytest.raises(BadInput, match=f"{key} .* is for tests: refused outside the test profile"):
        load_settings(gcp_config(**{key: "http://127.0.0.1:9"}), ROOT, env={})
    config = gcp_config(**{key: "http://127.0.0.1:9"})
    config["profile"] = "test"
    config["profiles"]["test"].update(config["profiles"]["gcp"])
    assert getattr(load_settings(config, ROOT, env={}), key) == "http://127.0.0.1:9"


def test_bake_settings_default_to_debian_12_without_external_ip():
    from mlbatch.core.settings import bake_zone

    settings = load_settings(gcp_config(), ROOT, env={})
    assert (settings.source_image_project, settings.source_image_family) == ("debian-cloud", "debian-12")
    assert settings.internal_ip and not settings.use_iap
    assert bake_zone(settings) == "europe-west4-a"
    assert bake_zone(load_settings(gcp_config(bake_zone="europe-west4-c"), ROOT, env={})) == "europe-west4-c"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("bake_zone", "us-central1-a", r"bake_zone 'us-central1-a': expected a zone of europe-west4"),
        ("source_image_family", "Debian 12", r"source_image_family 'Debian 12': expected a GCE name"),
        ("source_image_project", "", r"source_image_project '': expected a GCE name, e.g. debian-cloud"),
        ("bake_machine_type", "E2", r"bake_machine_type 'E2'"),
        ("internal_ip", "yes", r"internal_ip 'yes': expected true or false"),
        ("use_iap", 1, r"use_iap 1: expected true or false"),
        ("ssh_port", 70000, r"ssh_port 70000: expected a TCP port"),
        ("ssh_port", "22", r"ssh_port '22': expected a TCP port"),
    ],
)
def test_bad_bake_values_name_the_key(key, value, message):
    with pytest.raises(BadInput, match=message):
        load_settings(gcp_config(**{key: value}), ROOT, env={})


def test_a_bake_needs_a_way_to_reach_the_build_vm():
    with pytest.raises(BadInput, match="internal_ip and use_iap are both false"):
        load_settings(gcp_config(internal_ip=False, use_iap=False), ROOT, env={})
    assert load_settings(gcp_config(internal_ip=False, use_iap=True), ROOT, env={}).use_iap


@pytest.mark.parametrize(
    "account",
    [
        "mlbatch-runner@my-ml-project.iam.gserviceaccount.com",  # a user-managed account
        "123456789012-compute@developer.gserviceaccount.com",  # the Compute Engine default account
        "my-ml-project@appspot.gserviceaccount.com",  # the App Engine default account
        "runner@my-project.example.com.iam.gserviceaccount.com",  # of a domain-scoped project (example.com:my-project)
    ],
)
def test_every_documented_form_of_service_account_is_accepted(account):
    assert load_settings(gcp_config(service_account=account), ROOT, env={}).service_account == account


@pytest.mark.parametrize(
    "account",
    [
        "me@gmail.com",
        "Runner@my-ml-project.iam.gserviceaccount.com",
        "runner@my-ml-project.iam.gserviceaccount.com.example.net",
        "compute@developer.gserviceaccount.com",
        "my-project-compute@developer.gserviceaccount.com",
        "runner@@my-ml-project.iam.gserviceaccount.com",
        "run ner@my-ml-project.iam.gserviceaccount.com",
        "runner@iam.gserviceaccount.com",
    ],
)
def test_garbage_service_accounts_are_refused_naming_the_forms(account):
    with pytest.raises(BadInput, match=r"service_account .*-compute@developer\.gserviceaccount\.com"):
        load_settings(gcp_config(service_account=account), ROOT, env={})


def test_a_shared_vpc_host_project_is_a_project_id():
    assert load_settings(gcp_config(), ROOT, env={}).network_project == "my-ml-project"  # no Shared VPC: the project
    settings = load_settings(gcp_config(network_project="my-host-project"), ROOT, env={})
    assert settings.network_project == "my-host-project"
    with pytest.raises(BadInput, match="network_project 'Host_Project'"):
        load_settings(gcp_config(network_project="Host_Project"), ROOT, env={})


# invoke.yaml spells out some defaults for its readers; these differ on purpose.
CHOSEN_IN_INVOKE_YAML = {("local", "ca_bundle"), ("test", "ca_bundle")}


def test_invoke_yaml_restates_the_settings_defaults_and_does_not_contradict_them():
    from mlbatch.core.settings import DEFAULTS

    for profile, values in repo_config()["profiles"].items():
        for key, value in values.items():
            if key in DEFAULTS and value is not None and (profile, key) not in CHOSEN_IN_INVOKE_YAML:
                default = DEFAULTS[key]
                assert value == default or not default, f"invoke.yaml {profile}.{key}: {value!r}, Settings says {default!r}"


def test_an_unset_key_takes_the_settings_default():
    config = repo_config()
    del config["profiles"]["local"]["base_image"], config["profiles"]["local"]["image_family"]
    settings = load_settings(config, ROOT, env={})
    assert (settings.base_image, settings.image_family) == ("debian:bookworm-slim", "mlbatch")


# --- issue 18: validated by a schema, every problem at once, each with its path -------------------


def test_every_bad_setting_is_named_at_once_with_its_path():
    config = gcp_config(project="", zones=["europe-west4-a", "us-east1-b"], ssh_port="22", servce_account="x@y")
    with pytest.raises(BadInput) as caught:
        load_settings(config, ROOT, env={})
    message = str(caught.value)
    assert message.startswith("4 problems:")
    assert "invalid mlbatch.profiles.gcp.project '': expected a GCP project id" in message
    assert "invalid mlbatch.profiles.gcp.zones[1] 'us-east1-b': expected a zone of europe-west4, e.g. europe-west4-a" in message
    assert "invalid mlbatch.profiles.gcp.ssh_port '22': expected a TCP port" in message
    assert "mlbatch.profiles.gcp: unknown keys ['servce_account'] (did you mean servce_account -> service_account?)" in message


def test_the_schema_has_every_setting_of_a_profile():
    import dataclasses

    from mlbatch.core.settings import ProfileSettings, Settings

    fields = {f.name for f in dataclasses.fields(Settings)} - {"profile", "project_root", "state_dir"}
    assert set(ProfileSettings.model_fields) == fields
    assert all(f.description for f in ProfileSettings.model_fields.values()), "each says the form it expects"


def test_an_unknown_top_level_key_is_refused():
    with pytest.raises(BadInput, match=r"mlbatch: unknown keys \['profils'\] \(did you mean profils -> profiles\?\)"):
        load_settings({"profile": "local", "profils": {}}, ROOT, env={})


@pytest.mark.parametrize("url", ["http://hooks.example.com/T0/B0/secret", "ftp://127.0.0.1/x", "hooks.example.com"])
def test_a_webhook_must_be_https_or_loopback_and_is_never_shown(url):
    config = repo_config()
    config["profiles"]["local"]["notify_webhook"] = url
    with pytest.raises(BadInput, match=r"mlbatch.profiles.local.notify_webhook: expected an https:// URL") as caught:
        load_settings(config, ROOT, env={})
    assert url not in str(caught.value) and "secret" not in str(caught.value)


@pytest.mark.parametrize("url", ["https://hooks.example.com/T0/B0/x", "http://127.0.0.1:8080/hook", "http://[::1]:9/h"])
def test_webhooks_that_load(url):
    config = repo_config()
    config["profiles"]["local"]["notify_webhook"] = url
    assert load_settings(config, ROOT, env={}).notify_webhook == url


def test_a_topic_is_a_full_pubsub_name():
    config = repo_config()
    config["profiles"]["local"]["notify_topic"] = "mlbatch-runs"
    with pytest.raises(BadInput, match="notify_topic 'mlbatch-runs': expected projects/PROJECT/topics/TOPIC"):
        load_settings(config, ROOT, env={})
    config["profiles"]["local"]["notify_topic"] = "projects/my-ml-project/topics/mlbatch-runs"
    assert load_settings(config, ROOT, env={}).notify_topic.endswith("/topics/mlbatch-runs")
