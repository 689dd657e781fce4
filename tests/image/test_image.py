"""What every mlbatch image must hold. Run by `invoke release` before the manifest is written."""

import pytest

from mlbatch.core import image_paths

AGENT = image_paths.AGENT
VENV_PYTHON = f"{image_paths.AGENT_VENV}/bin/python"


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


CA_BUNDLE = image_paths.CA_BUNDLE


@pytest.mark.vm
def test_agent_unit_enabled_on_vm(host):
    # Started by systemd at boot, the agent reads its run spec from the instance metadata.
    assert host.service("mlbatch-agent").is_enabled
    unit = host.file("/etc/systemd/system/mlbatch-agent.service").content_string
    assert f"ExecStart={AGENT}" in unit
    # run-batch streams the serial console: the agent's output must reach it.
    assert "StandardOutput=journal+console" in unit
    assert "WantedBy=multi-user.target" in unit
    # ... only on a run VM: the VMs that carry no run spec (the image-test VM, Batch's task VMs) skip it.
    assert f"ExecCondition={AGENT} --check-run-spec" in unit


@pytest.mark.vm
def test_agent_does_not_start_on_a_vm_without_a_run_spec(host):
    # This suite runs on a VM without mlbatch-run-spec (the image-test VM): had the agent started,
    # its fail-safe would have ended the VM. The unit's condition kept it off (or, on a guest
    # provisioned after its boot, it never had to decide): nothing ran, nothing failed.
    show = host.run("systemctl show mlbatch-agent -p ExecMainStartTimestampMonotonic -p ActiveState -p ConditionResult")
    state = dict(line.split("=", 1) for line in show.stdout.splitlines() if "=" in line)
    assert state["ExecMainStartTimestampMonotonic"] == "0", f"the agent started on this VM: {state}"
    assert state["ActiveState"] == "inactive", state


@pytest.mark.vm
def test_docker_engine_on_vm(host):
    assert host.service("docker").is_enabled
    assert host.service("docker").is_running
    with host.sudo():
        info = host.run("docker info --format %s", "{{.ServerVersion}}")
    assert info.rc == 0 and info.stdout.strip(), info.stderr


@pytest.mark.vm
def test_ca_bundle_on_vm(host):
    bundle = host.file(CA_BUNDLE)
    assert bundle.is_file and "BEGIN CERTIFICATE" in bundle.content_string
    environment = host.file("/etc/environment").content_string
    for variable in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        assert f"{variable}={CA_BUNDLE}" in environment
    # The engine pulls with the system trust: the bundle is part of it.
    assert host.file("/usr/local/share/ca-certificates/mlbatch-extra.crt").is_file


@pytest.mark.vm
def test_prepulled_containers_on_vm(host, prepulled):
    if not prepulled:
        pytest.skip("no --mlbatch-prepulled given")
    with host.sudo():
        missing = [ref for ref in prepulled if host.run("docker image inspect --format %s %s", "{{.Id}}", ref).rc != 0]
    assert not missing, f"not pre-pulled into the image's engine: {missing}"
