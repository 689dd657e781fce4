"""`.drone.yml`: releases only on version tags, every command exists, no secret in the file."""

from __future__ import annotations

import re
import shlex

import pytest
import yaml

from tests.conftest import ROOT

PIPELINE = yaml.safe_load((ROOT / ".drone.yml").read_text())
STEPS = {step["name"]: step for step in PIPELINE["steps"]}
SETUP_COMMANDS = {"apt-get"}  # installing the toolchain before the project's own scripts
SECRET_LIKE = re.compile(r"KEY|TOKEN|PASSWORD|SECRET|CREDENTIAL|WEBHOOK|PROJECT|BUCKET|REGISTRY|SERVICE_ACCOUNT")


def invoke_tasks() -> set[str]:
    import tasks

    return set(tasks.ns.task_names) | {alias for names in tasks.ns.task_names.values() for alias in names}


def called(command: str) -> list[list[str]]:
    """Each simple command of a shell line (split on && ; |)."""
    return [shlex.split(part) for part in re.split(r"&&|;|\|", command) if part.strip()]


def test_the_pipeline_runs_on_version_tags_only():
    assert PIPELINE["trigger"] == {"ref": ["refs/tags/v*"]}
    assert STEPS["release"]["when"]["ref"] == ["refs/tags/v*"]
    assert STEPS["release"]["depends_on"] == ["test"]


@pytest.mark.parametrize("name", list(STEPS))
def test_every_command_calls_a_script_or_task_that_exists(name):
    for command in STEPS[name]["commands"]:
        for argv in called(command):
            if argv[0] in SETUP_COMMANDS:
                continue
            assert (ROOT / argv[0]).is_file(), f"step {name}: {argv[0]} is not a file of the project"
            text = (ROOT / argv[0]).read_text()
            for task in re.findall(r"invoke\s+([\w.-]+)", text):
                assert task in invoke_tasks(), f"{argv[0]} calls `invoke {task}`, which tasks/ does not define"


def test_the_release_step_runs_the_gcp_release_of_the_tag():
    script = (ROOT / "scripts" / "release-ci").read_text()
    assert 'invoke release --version "$DRONE_TAG" --profile "$profile"' in script
    assert "profile=${INVOKE_MLBATCH_PROFILE:-}" in script, "the profile is the step's, refused unless gcp (or test)"
    assert STEPS["release"]["environment"]["INVOKE_MLBATCH_PROFILE"] == "gcp"
    # invoke maps these onto mlbatch.profiles.gcp.*; each key exists in invoke.yaml
    config = yaml.safe_load((ROOT / "invoke.yaml").read_text())["mlbatch"]["profiles"]["gcp"]
    for var in STEPS["release"]["environment"]:
        if var.startswith("INVOKE_MLBATCH_PROFILES_GCP_"):
            assert var.removeprefix("INVOKE_MLBATCH_PROFILES_GCP_").lower() in config


def test_no_secret_value_is_written_in_the_file():
    text = (ROOT / ".drone.yml").read_text()
    assert not re.search(r"PRIVATE KEY|ya29\.|\"type\":\s*\"service_account\"|AKIA|gserviceaccount\.com", text)
    for step in PIPELINE["steps"]:
        for var, value in (step.get("environment") or {}).items():
            if SECRET_LIKE.search(var):
                assert isinstance(value, dict) and set(value) == {"from_secret"}, f"{step['name']}: {var} is not from_secret"


def test_a_failed_build_is_notified():
    assert STEPS["notify"]["when"] == {"status": ["failure"]}
    assert STEPS["notify"]["environment"]["NOTIFY_WEBHOOK"] == {"from_secret": "notify_webhook"}


def test_every_image_is_pinned_by_digest():
    images = [s["image"] for s in PIPELINE["steps"]] + [s["image"] for s in PIPELINE["services"]]
    for image in images:
        assert re.fullmatch(r"[a-z0-9./-]+:[\w.-]+@sha256:[0-9a-f]{64}", image), image


def test_the_release_step_reaches_the_dind_engine_through_its_socket():
    (service,) = PIPELINE["services"]
    assert service["privileged"] is True and service["image"].startswith("docker:")
    volume = {v["name"]: v for v in PIPELINE["volumes"]}
    (shared,) = service["volumes"]
    assert volume[shared["name"]] == {"name": shared["name"], "temp": {}}, "a temp volume, not the host's socket"
    assert shared in STEPS["release"]["volumes"]
    socket = STEPS["release"]["environment"]["DOCKER_HOST"]
    assert socket == f"unix://{shared['path']}/docker.sock"
    assert "privileged" not in STEPS["release"], "the engine is the service's; the step itself needs no privilege"


def test_the_release_step_installs_hashicorps_packer_pinned_by_sha256():
    script = (ROOT / "scripts" / "release-ci").read_text()
    assert "scripts/install-packer" in script
    installer = (ROOT / "scripts" / "install-packer").read_text()
    from mlbatch.release.bake import PINNED_PACKER

    assert f"version={PINNED_PACKER}\n" in installer, "the installer and the refusal name the same Packer"
    assert re.search(r"x86_64\) arch=amd64 sha256=[0-9a-f]{64} ;;", installer)
    assert "sha256sum --check" in installer and "releases.hashicorp.com/packer/" in installer
    plugins = (ROOT / "packer" / "required_plugins.pkr.hcl").read_text()
    assert re.findall(r'version\s*=\s*"([^"]+)"', plugins)[1:] == ["= 1.1.4", "= 1.2.7", "= 1.1.6"], "plugins pinned exactly"
    for command in STEPS["release"]["commands"]:
        if command.startswith("apt-get"):
            assert {"curl", "unzip", "ca-certificates"} <= set(command.split()), "what install-packer needs"
