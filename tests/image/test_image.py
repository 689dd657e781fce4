"""What every mlbatch image must hold. Run by `invoke release` before the manifest is written."""

import json
import re

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


def test_the_agent_wheel_is_the_one_the_manifest_names(host, agent_wheel_sha256):
    """The wheel pip installed (it checked the hash: the agent role's --require-hashes, and records
    it in the distribution's direct_url.json), the copy kept in the image, and the provenance file
    agree with each other and with the release's manifest (issue 16, item 8)."""
    release = host.file("/etc/mlbatch-release").content_string
    recorded = dict(line.split("=", 1) for line in release.splitlines() if "=" in line).get("MLBATCH_AGENT_WHEEL_SHA256")
    assert recorded and re.fullmatch(r"[0-9a-f]{64}", recorded), release
    read = host.run(
        f'{VENV_PYTHON} -c \'import importlib.metadata as m; print(m.distribution("mlbatch").read_text("direct_url.json"))\''
    )
    assert read.rc == 0, read.stderr
    archive = json.loads(read.stdout)
    # PEP 610's `hash` ("sha256=..."), from the URL the agent role gave pip with the same --hash it checked.
    assert archive["archive_info"]["hash"] == f"sha256={recorded}", archive
    wheel = host.file(archive["url"].removeprefix("file://"))
    assert wheel.sha256sum == recorded
    if agent_wheel_sha256:
        assert recorded == agent_wheel_sha256, "the image holds another agent wheel than the manifest names"


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


# What the agent's unit holds it to (issue 16, item 7), as systemd parsed it, not as written.
SANDBOX = {
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "NoNewPrivileges": "yes",
    "RestrictSUIDSGID": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "LockPersonality": "yes",
    "RestrictNamespaces": "yes",
    "OOMScoreAdjust": "-900",
    "StateDirectory": "mlbatch",
    "CapabilityBoundingSet": "cap_dac_read_search cap_net_admin cap_net_raw cap_sys_boot",
}


@pytest.mark.vm
def test_agent_unit_is_sandboxed_and_outlives_a_job_out_of_memory(host):
    show = host.run("systemctl show mlbatch-agent " + " ".join(f"-p {name}" for name in SANDBOX))
    found = dict(line.split("=", 1) for line in show.stdout.splitlines() if "=" in line)
    assert found == SANDBOX
    # systemd's own reckoning of the unit's exposure (0 best, 10 worst); the engine's socket, which
    # the agent needs, is root by another name: README "Security" says so.
    score = host.run("systemd-analyze security --no-pager mlbatch-agent")
    match = re.search(r"Overall exposure level for mlbatch-agent\.service: ([0-9.]+)", score.stdout)
    assert match, score.stdout[-2000:] + score.stderr
    assert float(match.group(1)) <= 3.0, score.stdout[-3000:]


# Run under the agent unit's own sandbox (its [Service] lines, ExecCondition and ExecStart
# swapped for this): the agent's Python drives the engine and writes its work directory, and
# can write nothing else.
SANDBOX_PROBE = """
import json, pathlib, docker
client = docker.from_env()
seen = {"engine": client.ping(), "containers": isinstance(client.containers.list(all=True), list)}
work = pathlib.Path("/var/lib/mlbatch/work/probe")
work.mkdir(parents=True, exist_ok=True)
(work / "x").write_text("ok")
seen["work"] = (work / "x").read_text()
for name in ("/etc/mlbatch-probe", "/opt/mlbatch/probe", "/usr/local/probe"):
    try:
        pathlib.Path(name).write_text("x")
        seen[name] = "written"
    except OSError as exc:
        seen[name] = exc.strerror
try:
    seen["root"] = sorted(p.name for p in pathlib.Path("/root").iterdir())
except OSError as exc:
    seen["root"] = exc.strerror
print("PROBE " + json.dumps(seen))
"""


@pytest.mark.vm
def test_the_sandbox_lets_the_agent_drive_the_engine_and_write_only_its_work_directory(host):
    unit = host.file("/etc/systemd/system/mlbatch-agent.service").content_string
    service = [
        line
        for line in unit.split("[Service]", 1)[1].split("[Install]", 1)[0].splitlines()
        if line.strip() and not line.startswith(("#", "ExecCondition=", "ExecStart=", "Type="))
    ]
    probe = "\n".join(["[Service]", "Type=oneshot", f"ExecStart={VENV_PYTHON} /run/mlbatch-probe.py", *service, ""])
    with host.sudo():
        host.run_test("printf '%%s' %s > /run/mlbatch-probe.py", SANDBOX_PROBE)
        host.run_test("printf '%%s' %s > /run/systemd/system/mlbatch-sandbox-probe.service", probe)
        try:
            host.run_test("systemctl daemon-reload")
            started = host.run("systemctl start mlbatch-sandbox-probe")
            log = host.run("journalctl -u mlbatch-sandbox-probe -o cat --no-pager").stdout
        finally:
            host.run("rm -f /run/systemd/system/mlbatch-sandbox-probe.service /run/mlbatch-probe.py")
            host.run("rm -rf /var/lib/mlbatch/work/probe")
            host.run("systemctl daemon-reload")
    assert started.rc == 0, log[-3000:]
    line = [text for text in log.splitlines() if text.startswith("PROBE ")][-1]
    seen = json.loads(line.removeprefix("PROBE "))
    assert seen["engine"] is True and seen["containers"] is True and seen["work"] == "ok", seen
    assert {seen[name] for name in ("/etc/mlbatch-probe", "/opt/mlbatch/probe", "/usr/local/probe")} == {
        "Read-only file system"
    }, seen
    assert seen["root"] in ([], "Permission denied"), seen  # ProtectHome: /root is empty or out of reach


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


def test_no_unattended_upgrades(host):
    # Images are rebaked (max_image_age_days) rather than upgraded in place: README "Security".
    assert not host.package("unattended-upgrades").is_installed


@pytest.mark.vm
def test_apt_does_not_change_a_running_vm(host):
    periodic = host.file("/etc/apt/apt.conf.d/20auto-upgrades").content_string
    assert 'APT::Periodic::Unattended-Upgrade "0";' in periodic
    assert 'APT::Periodic::Update-Package-Lists "0";' in periodic
    for timer in ("apt-daily.timer", "apt-daily-upgrade.timer"):
        state = host.run(f"systemctl is-enabled {timer}").stdout.strip()
        assert state == "masked", f"{timer} is {state}"
