"""What every mlbatch image must hold. Run by `invoke release` before the manifest is written."""

import pytest

AGENT = "/opt/mlbatch/venv/bin/mlbatch-agent"
VENV_PYTHON = "/opt/mlbatch/venv/bin/python"


def test_provenance_names_the_release(host, expected_version):
    release = host.file("/etc/mlbatch-release")
    assert release.is_file
    fields = dict(line.split("=", 1) for line in release.content_string.splitlines() if "=" in line)
    assert set(fields) >= {"MLBATCH_VERSION", "MLBATCH_GIT_SHA", "MLBATCH_IMAGE_NAME", "MLBATCH_BUILD_TIME"}
    if expected_version:
        assert fields["MLBATCH_VERSION"] == expected_version


@pytest.mark.parametrize("package", ["python3", "python3-venv", "ca-certificates", "tini"])
def test_base_packages(host, package):
    assert host.package(package).is_installed


def test_agent_runs_from_its_venv(host):
    assert host.file(AGENT).is_file
    result = host.run(f"{AGENT} --version")
    assert result.rc == 0, result.stderr
    assert result.stdout.startswith("mlbatch-agent ")


@pytest.mark.parametrize("module", ["docker", "google.cloud.storage", "yaml", "mlbatch.agent.main"])
def test_agent_dependencies_import(host, module):
    assert host.run(f"{VENV_PYTHON} -c 'import {module}'").rc == 0


def test_agent_does_not_import_the_compute_client(host):
    # The agent stays small: the Compute client is the controller's.
    result = host.run(f"{VENV_PYTHON} -c 'import mlbatch.agent.main, sys; print(\"google.cloud.compute_v1\" in sys.modules)'")
    assert result.stdout.strip() == "False"


@pytest.mark.vm
def test_agent_unit_enabled_on_vm(host):
    assert host.service("mlbatch-agent").is_enabled
    # run-batch streams the serial console: the agent's output must reach it.
    assert "StandardOutput=journal+console" in host.file("/etc/systemd/system/mlbatch-agent.service").content_string


@pytest.mark.vm
def test_docker_engine_on_vm(host):
    assert host.service("docker").is_enabled
