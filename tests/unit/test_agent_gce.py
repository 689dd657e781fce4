import json

import pytest

from mlbatch.agent import gce, main
from mlbatch.agent.gce import needs_registry_login
from tests.support.fake_compute import FakeCompute, FakeInstance
from tests.support.fake_compute.metadata import metadata_server


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


# --- against the fake's metadata server and Compute API (no Docker) -----------------------------


@pytest.fixture
def vm(monkeypatch):
    """A fake instance with its metadata server, as the agent sees it on a VM."""
    fake = FakeCompute("mlbatch-test", boot_containers=False).start()
    spec = {"run_id": "sleep-20260101-000000-abcd", "bucket": "file:///nonexistent"}
    items = [
        {"key": "mlbatch-run-spec", "value": json.dumps(spec)},
        {"key": "mlbatch-attempt", "value": "1"},
        {"key": "mlbatch-compute-endpoint", "value": fake.endpoint},
    ]
    instance = FakeInstance(
        zone="europe-west4-a", body={"name": "mlb-agent-1", "id": "1", "metadata": {"items": items}}, status="RUNNING"
    )
    fake.instances[(instance.zone, instance.name)] = instance
    instance.metadata_server = metadata_server(fake, instance)
    monkeypatch.setenv("GCE_METADATA_HOST", f"127.0.0.1:{instance.metadata_server.server_port}")
    monkeypatch.delenv("MLBATCH_INSTANCE_FILE", raising=False)
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
    assert "MLBATCH-AGENT-FAILED: JSONDecodeError" in capsys.readouterr().out
    assert fake.calls["instances.delete"] == 1 and instance.deleting, "the agent deleted its own VM"
