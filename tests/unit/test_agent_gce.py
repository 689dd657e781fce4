import http.server
import json
import os
import urllib.error

import pytest

from mlbatch.agent import gce, main
from mlbatch.agent.gce import instance_spec, needs_registry_login
from mlbatch.core.errors import BadInput
from mlbatch.core.runs import InstanceSpec
from tests.support.fake_compute import FakeCompute, FakeInstance
from tests.support.fake_vm import metadata as fake_metadata
from tests.support.loopback import JsonServer, start_serving
from tests.unit.test_records import SPEC


@pytest.mark.parametrize(
    ("ref", "login"),
    [
        ("europe-west4-docker.pkg.dev/proj/mlbatch/trainer@sha256:ab", True),
        ("gcr.io/proj/trainer@sha256:ab", True),
        ("eu.gcr.io/proj/trainer@sha256:ab", True),
        ("127.0.0.1:5000/trainer@sha256:ab", False),
        ("docker.io/library/python@sha256:ab", False),
    ],
)
def test_only_google_registries_get_the_vm_token(ref, login):
    assert needs_registry_login(ref) is login


class _Metadata(http.server.BaseHTTPRequestHandler):
    """The GCE metadata server's answers, strict about the Metadata-Flavor header like the real one."""

    values: dict[str, str] = {}

    def do_GET(self):  # noqa: N802 - the http.server hook
        path = self.path.removeprefix("/computeMetadata/v1/")
        if self.headers.get("Metadata-Flavor") != "Google":
            self.send_error(403)
        elif path not in self.values:
            self.send_error(404)
        else:
            body = self.values[path].encode()
            self.send_response(200)
            self.send_header("Metadata-Flavor", "Google")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def metadata_server(monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Metadata)
    start_serving(server, "metadata")
    monkeypatch.setenv("GCE_METADATA_HOST", f"127.0.0.1:{server.server_port}")
    yield _Metadata.values
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("written_by", ["this mlbatch", "an mlbatch before schema versions"])
def test_the_agent_reads_its_instance_spec_from_metadata(metadata_server, monkeypatch, tmp_path, written_by):
    spec = json.loads(SPEC.to_json())
    if written_by != "this mlbatch":
        del spec["schema_version"]
        spec["profile"] = "gcp"
    metadata_server.update(
        {
            "instance/attributes/mlbatch-run-spec": json.dumps(spec),
            "instance/attributes/mlbatch-attempt": "2",
            "instance/name": "mlb-sleep-20261125-200000-abcd-2",
        }
    )
    monkeypatch.setenv("MLBATCH_WORKDIR", str(tmp_path))
    assert instance_spec() == InstanceSpec(
        spec=SPEC, attempt=2, instance="mlb-sleep-20261125-200000-abcd-2", workdir=str(tmp_path)
    )


# --- against the fake's metadata server and Compute API (no Docker) -----------------------------


@pytest.fixture
def vm(monkeypatch, request):
    """A fake instance with its metadata server, as the agent sees it on a VM; its
    mlbatch-compute-endpoint is the fake's, or the test's parameter."""
    fake = FakeCompute("mlbatch-test", boot_containers=False).start()
    items = [
        {"key": "mlbatch-run-spec", "value": SPEC.to_json()},
        {"key": "mlbatch-attempt", "value": "1"},
        {"key": "mlbatch-compute-endpoint", "value": getattr(request, "param", fake.endpoint)},
    ]
    body = {
        "name": "mlb-agent-1",
        "id": "1",
        "metadata": {"items": items},
        # A run VM's account, as the gce provider sets it (the agent's token comes from it).
        "serviceAccounts": [{"email": "mlbatch-runner@mlbatch-test.iam.gserviceaccount.com"}],
    }
    instance = FakeInstance(zone="europe-west4-a", body=body, status="RUNNING")
    fake.instances[(instance.zone, instance.name)] = instance
    instance.metadata_server = fake_metadata.metadata_server(fake, instance)
    monkeypatch.setenv("GCE_METADATA_HOST", f"127.0.0.1:{instance.metadata_server.server_port}")
    monkeypatch.delenv("MLBATCH_INSTANCE_FILE", raising=False)
    monkeypatch.setattr(gce, "BACKOFF_FIRST", 0.01)  # the agent's waits between tries, shortened (its decisions are the same)
    yield fake, instance
    fake.stop()


def test_a_metadata_server_not_ready_at_boot_is_waited_for(vm):
    fake, _ = vm
    fake.faults.metadata_unavailable = 3
    assert gce.metadata("instance/name") == "mlb-agent-1"


def test_sigterm_asks_whether_it_is_a_preemption(vm):
    _, instance = vm
    assert gce.preempted() is False
    instance.preempted = True
    assert gce.preempted() is True


def test_an_agent_that_cannot_read_its_spec_says_so_and_deletes_its_vm(vm, capsys):
    fake, instance = vm
    fake.faults.corrupt_run_spec = True
    assert main.main([]) == 1
    assert "MLBATCH-AGENT-FAILED: BadRecord: metadata mlbatch-run-spec is not JSON" in capsys.readouterr().out
    assert fake.calls["instances.delete"] == 1 and instance.deleting, "the agent deleted its own VM"


def test_an_agent_that_cannot_read_its_spec_records_the_failure_in_the_bucket(vm, tmp_path):
    """The console marker dies with the VM (a controller polling the console every few seconds
    may never see it): the failure is recorded in the bucket from the run id and bucket the VM
    carries apart from the spec, so the controller reads why the run ended whatever its timing."""
    import dataclasses

    from mlbatch.core import runs
    from mlbatch.core.bucket import open_bucket

    fake, instance = vm
    spec = dataclasses.replace(SPEC, bucket=f"file://{tmp_path}")
    instance.body["metadata"]["items"] = [
        {"key": "mlbatch-run-spec", "value": spec.to_json()},
        {"key": "mlbatch-attempt", "value": "3"},
        {"key": "mlbatch-run-id", "value": spec.run_id},
        {"key": "mlbatch-bucket", "value": spec.bucket},
        {"key": "mlbatch-compute-endpoint", "value": fake.endpoint},
    ]
    fake.faults.corrupt_run_spec = True
    assert main.main([]) == 1
    result = runs.read_result(open_bucket(spec.bucket), spec.run_id)
    assert result is not None and result.attempt == 3 and result.status == runs.INFRA_FAILED
    assert "MLBATCH-AGENT-FAILED" in result.message and "mlbatch-run-spec is not JSON" in result.message
    assert fake.calls["instances.delete"] == 1


# --- issue 16, item 5: the VM's token goes to Google over https, or to a loopback fake ------------


@pytest.mark.parametrize(
    "url",
    [
        "https://compute.googleapis.com/compute/v1/projects/p/zones/z/instances/i",
        "https://compute.europe-west4.rep.googleapis.com/compute/v1/x",
        "http://127.0.0.1:8080/compute/v1/x",
        "http://127.3.4.5:1/x",
        "http://[::1]:9/x",
        "http://localhost:9/x",
        "https://LOCALHOST/x",
    ],
)
def test_the_token_may_go_to_google_over_https_or_to_loopback(url):
    assert gce.token_destination(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "http://compute.googleapis.com/compute/v1/x",  # Google, but in clear
        "https://evil.example.com/compute/v1/x",
        "https://compute.googleapis.com.evil.example.com/x",
        "https://compute.googleapis.com@evil.example.com/x",
        "https://evil.example.com\\@compute.googleapis.com/x",
        "https://evil.example.com#@compute.googleapis.com/x",
        "https://evilgoogleapis.com/x",
        "https://googleapis.com/x",
        "https://compute.googleapis.com./x",
        "http://169.254.169.254/x",
        "http://10.1.2.3/x",
        "http://localhost.evil.example.com/x",
        "http://127.0.0.1.evil.example.com/x",
        "http://[::ffff:8.8.8.8]/x",
        "ftp://127.0.0.1/x",
        "file:///etc/passwd",
        "https://user:pw@compute.googleapis.com/x",
        "compute.googleapis.com/x",
        "",
    ],
)
def test_the_token_is_refused_to_anything_else(url):
    with pytest.raises(BadInput) as caught:
        gce.token_destination(url)
    assert "refused to send this VM's token" in str(caught.value) and "googleapis.com" in str(caught.value)


@pytest.fixture
def on_path(monkeypatch):
    """What sits on the way to a host that is not loopback: a proxy on 127.0.0.1 that records
    every request it is handed and answers 404 (a delete's "already gone"), so nothing leaves
    this machine whatever the agent does. Loopback (the metadata server) bypasses it."""
    seen: list[tuple[str, str, str]] = []

    def respond(verb, path, headers, body):
        seen.append((verb, path, headers.get("Authorization", "")))
        return 404, {"error": {"code": 404, "message": "not found"}}

    proxy = JsonServer(respond)
    proxy.start()
    for name in ("http_proxy", "https_proxy"):
        monkeypatch.setenv(name, proxy.url)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    yield seen
    proxy.stop()


@pytest.fixture
def poweroff(tmp_path, monkeypatch):
    """`systemctl` on PATH for the agent: records its arguments instead of powering anything off."""
    bindir, record = tmp_path / "bin", tmp_path / "systemctl-calls"
    bindir.mkdir()
    (bindir / "systemctl").write_text(f'#!/bin/sh\necho "$@" >> {record}\n')
    (bindir / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    return record


@pytest.mark.parametrize("vm", ["http://evil.example.test", "http://compute.googleapis.com"], indirect=True)
def test_an_endpoint_that_is_not_google_over_https_gets_no_token_and_the_vm_powers_off(vm, on_path, poweroff, capsys):
    fake, instance = vm
    gce.end_instance()
    assert on_path == [], "the token (or any request) went to the endpoint the metadata named"
    out = capsys.readouterr().out
    assert "refused to send this VM's token" in out and "powering off" in out
    assert poweroff.read_text().split() == ["poweroff"]
    assert fake.calls["instances.delete"] == 0 and not instance.deleting


def test_the_loopback_fake_still_gets_the_delete(vm, on_path, poweroff):
    fake, instance = vm
    gce.end_instance()
    assert fake.calls["instances.delete"] == 1 and instance.deleting
    assert on_path == [] and not poweroff.exists()


# --- the unit's condition: the agent starts only on a run VM -----------------------------------


def test_the_unit_condition_starts_the_agent_on_a_run_vm_even_when_metadata_answers_late(vm, capsys):
    fake, _ = vm
    fake.faults.metadata_unavailable = 3  # the metadata server is still starting at boot
    assert main.main(["--check-run-spec"]) == main.RUN_VM
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("service_account", [True, False], ids=["a Batch task VM", "the image-test VM"])
def test_the_unit_condition_keeps_the_agent_off_a_vm_without_a_run_spec_and_ends_nothing(vm, capsys, service_account):
    """The image-test VM (no service account) and Cloud Batch's task VMs carry no mlbatch-run-spec:
    the condition says so (exit 1: systemd skips the unit, not a failure), and nothing ends the VM."""
    fake, instance = vm
    instance.body["metadata"]["items"] = []
    if not service_account:
        del instance.body["serviceAccounts"]
        with pytest.raises(urllib.error.HTTPError) as no_token:  # the metadata server has no token to give
            gce.access_token()
        assert no_token.value.code == 404
    assert main.main(["--check-run-spec"]) == main.NOT_A_RUN_VM
    assert "no mlbatch-run-spec in this VM's metadata: not a run VM" in capsys.readouterr().out
    assert fake.calls["instances.delete"] == 0 and not instance.deleting


def test_the_unit_condition_fails_the_unit_when_the_metadata_server_refuses(monkeypatch, capsys):
    """In doubt nothing is ended: exit 255 fails the unit (systemd's ExecCondition)."""

    class Refusing(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server hook
            self.send_error(403)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    start_serving(server, "refusing-metadata")
    monkeypatch.setenv("GCE_METADATA_HOST", f"127.0.0.1:{server.server_port}")
    try:
        assert main.main(["--check-run-spec"]) == main.CANNOT_TELL
    finally:
        server.shutdown()
        server.server_close()
    assert "cannot tell whether this is a run VM" in capsys.readouterr().out
