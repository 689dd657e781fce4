"""The agent's job network and the token server it runs for a job with google_access, on
loopback: a fake metadata server and a fake STS stand for Google's (tests/support), an
iptables on PATH for the kernel's. Nothing here reaches the Docker engine: a local instance's
job needs none of it before its container is made, and a VM's fails closed before it."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import stat
from collections.abc import Iterator

import pytest

from mlbatch.agent import jobnet, tokens
from mlbatch.agent.runner import Attempt
from mlbatch.core import runs
from mlbatch.core.access import GoogleAccess, access_boundary
from mlbatch.core.bucket import FileBucket
from mlbatch.core.catalog import parse_catalog
from mlbatch.core.errors import BadInput, MlbatchError
from mlbatch.run.controller import RunRequest
from tests.support.fake_metadata import FakeMetadata
from tests.support.fake_sts import FakeSts
from tests.support.gcs_iam import BucketIam
from tests.support.memory_provider import MemoryProvider, succeed
from tests.support.releases import publish_release
from tests.unit.conftest import FastController

RUNNER = "mlbatch-runner@p.iam.gserviceaccount.com"
BOUNDARY = access_boundary("gs://b", GoogleAccess(read=("datasets/",)))


@pytest.fixture
def metadata_and_sts(monkeypatch):
    """The VM's metadata server and STS, on loopback, as the agent of a test finds them."""
    iam = BucketIam()
    metadata = FakeMetadata(RUNNER, "p", iam)
    sts = FakeSts(iam).start()
    with metadata.running():
        monkeypatch.setenv("GCE_METADATA_HOST", metadata.host)
        monkeypatch.setenv("MLBATCH_STS_ENDPOINT", sts.token_url)
        yield iam, sts, metadata
    sts.stop()


@pytest.fixture
def served(metadata_and_sts):
    iam, sts, metadata = metadata_and_sts
    with tokens.TokenServer(tokens.JobToken(BOUNDARY, sts.token_url), "127.0.0.1", RUNNER, "p") as server:
        yield server, iam, sts, metadata


def _get(server, path, headers=None, source="127.0.0.1"):
    host, port = server.address.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30, source_address=(source, 0))
    conn.request("GET", path, headers={"Metadata-Flavor": "Google", **(headers or {})})
    answer = conn.getresponse()
    body = answer.read().decode()
    conn.close()
    return answer.status, body


TOKEN = "/computeMetadata/v1/instance/service-accounts/default/token"  # noqa: S105 - a path


def test_the_job_gets_a_downscoped_token_and_google_auth_finds_it(served):
    server, iam, sts, metadata = served
    server.allow("127.0.0.1")
    status, body = _get(server, TOKEN)
    assert status == 200
    token = json.loads(body)["access_token"]
    assert token != metadata.token and iam.principal(f"Bearer {token}").boundaries == (
        tuple(BOUNDARY["accessBoundary"]["accessBoundaryRules"]),
    )
    assert _get(server, TOKEN)[1] == body and len(sts.exchanges) == 1  # traded once, served again
    assert _get(server, "/computeMetadata/v1/instance/service-accounts/default/email") == (200, RUNNER)
    assert _get(server, "/computeMetadata/v1/project/project-id") == (200, "p")
    assert _get(server, "/")[0] == 200


def test_the_server_answers_the_job_container_alone_and_only_as_the_metadata_server_does(served):
    server, *_ = served
    server.allow("127.0.0.2")  # the job's address; this test's client is another
    assert _get(server, TOKEN)[0] == 403
    assert _get(server, TOKEN, source="127.0.0.2")[0] == 200
    assert _get(server, TOKEN, {"Metadata-Flavor": ""}, source="127.0.0.2")[0] == 403
    assert _get(server, TOKEN, {"X-Forwarded-For": "10.0.0.9"}, source="127.0.0.2")[0] == 403
    assert _get(server, "/computeMetadata/v1/instance/attributes/mlbatch-run-spec", source="127.0.0.2")[0] == 404
    assert _get(server, "/computeMetadata/v1/instance/service-accounts/default/identity", source="127.0.0.2")[0] == 404
    assert server.refused and server.refused[0].startswith("127.0.0.1 ")


def test_the_vm_token_goes_to_google_or_loopback_only():
    with pytest.raises(Exception, match="refused to send this VM's token"):
        tokens.JobToken(BOUNDARY, "http://sts.example.com/v1/token")


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("127.0.0.1:8080", True),
        ("[::1]:80", True),
        ("localhost", True),
        ("metadata.google.internal", False),
        ("169.254.169.254", False),
    ],
)
def test_a_loopback_metadata_server_needs_no_rule(host, local):
    assert jobnet.metadata_is_local(host) is local


@pytest.fixture
def iptables(tmp_path, monkeypatch):
    """An iptables on PATH that keeps the rules it is given in a file, as the kernel would."""
    rules = tmp_path / "rules"
    script = tmp_path / "bin" / "iptables"
    script.parent.mkdir()
    script.write_text(
        "#!/bin/sh\n"
        f'RULES={rules}\nif [ -f "$RULES.broken" ]; then echo "iptables: Permission denied" >&2; exit 4; fi\n'
        'action=$1; shift\nrule="$*"\ntouch "$RULES"\n'
        'case $action in -C) grep -qxF -- "$rule" "$RULES";; -I) echo "$rule" >> "$RULES";; *) exit 2;; esac\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{script.parent}:{os.environ['PATH']}")
    monkeypatch.delenv("GCE_METADATA_HOST", raising=False)
    return rules


def test_on_a_vm_the_metadata_server_is_blocked_once(iptables):
    jobnet.block_metadata_server()
    jobnet.block_metadata_server()
    assert iptables.read_text().splitlines() == ["DOCKER-USER -d 169.254.169.254/32 -j REJECT"]


def test_a_rule_that_cannot_be_set_keeps_the_job_from_starting(iptables):
    iptables.with_name("rules.broken").touch()
    with pytest.raises(MlbatchError, match="cannot keep the job off the metadata server.*Permission denied"):
        jobnet.block_metadata_server()


@contextlib.contextmanager
def _attempt(tmp_path, on_vm: bool, network: bool = False, google_access=None, bucket: str = "") -> Iterator[Attempt]:
    spec = runs.RunSpec(
        run_id="reader-20261125-200000-abcd",
        job="reader",
        version="v1.0.0",
        bucket=bucket or f"file://{tmp_path / 'bucket'}",
        container="127.0.0.1:5000/trainer@sha256:" + "a" * 64,
        code_key="batch_code/v1.0.0/code.tar.gz",
        code_sha256="b" * 64,
        argv=("python", "r.py"),
        params={},
        timeout_seconds=60,
        created="2026-11-25T20:00:00.000+00:00",
        vm_image="mlbatch-v1-0-0:latest",
        network=network or bool(google_access),
        google_access=google_access or {},
    )
    attempt = Attempt(spec, 1, "mlb-reader-20261125-200000-abcd-1", tmp_path / "work", on_vm=on_vm)
    try:
        yield attempt
    finally:
        attempt.log.close()


@pytest.mark.parametrize("on_vm", [False, True])
def test_a_job_that_declares_nothing_gets_no_network_anywhere(tmp_path, iptables, on_vm):
    with _attempt(tmp_path, on_vm) as attempt, attempt.job_network(client=None) as network:
        assert network == jobnet.JobNetwork({"network_mode": "none"})
    assert not iptables.exists()  # no rule needed: nothing to reach the metadata server with


def test_on_a_local_instance_a_job_with_a_network_shares_the_hosts(tmp_path, iptables):
    with _attempt(tmp_path, on_vm=False, network=True) as attempt, attempt.job_network(client=None) as network:
        assert network == jobnet.JobNetwork({"network_mode": "host"})
    assert not iptables.exists()


def test_on_a_local_instance_the_jobs_token_is_served_on_loopback(tmp_path, iptables, metadata_and_sts, gcs_bucket):
    iam, sts, _ = metadata_and_sts
    access = {"read": ["datasets/"], "write": []}
    with _attempt(tmp_path, False, google_access=access, bucket=gcs_bucket) as attempt, attempt.job_network(None) as network:
        assert network.arguments == {"network_mode": "host"}
        server = network.token_server
        assert server is not None and server.address.startswith("127.0.0.1:")
        assert network.environment["GCE_METADATA_HOST"] == server.address
        network.admit(container=None)  # the host's network: the job asks from the host's loopback
        status, body = _get(server, TOKEN)
    assert status == 200 and iam.principal(f"Bearer {json.loads(body)['access_token']}").boundaries
    assert len(sts.exchanges) == 1 and not iptables.exists()


def test_a_local_bucket_has_nothing_to_downscope(tmp_path, metadata_and_sts):
    _, sts, _ = metadata_and_sts
    access = {"read": ["datasets/"], "write": []}
    with _attempt(tmp_path, on_vm=False, google_access=access) as attempt, attempt.job_network(None) as network:
        assert network == jobnet.JobNetwork({"network_mode": "host"})
    assert sts.exchanges == []


def test_on_a_vm_a_rule_that_cannot_be_set_stops_the_job_before_the_engine_is_asked(tmp_path, iptables):
    iptables.with_name("rules.broken").touch()
    with _attempt(tmp_path, on_vm=True, network=True) as attempt:
        with pytest.raises(MlbatchError, match="cannot keep the job off the metadata server"):
            with attempt.job_network(client=None):
                pass


CATALOG = """
jobs:
  quiet: {container: trainer, command: [python, q.py]}
  online: {container: trainer, command: [python, o.py], network: true}
  reader:
    container: trainer
    command: [python, r.py]
    google_access: {read: [datasets/], write: ["runs/{job}/{run_id}/out/"]}
"""


@pytest.mark.parametrize(
    ("job", "network", "access"),
    [
        ("quiet", False, {}),
        ("online", True, {}),
        ("reader", True, {"read": ["datasets/"], "write": ["runs/{job}/{run_id}/out/"]}),
    ],
)
def test_the_run_spec_carries_what_the_job_declares(tmp_path, job, network, access):

    bucket = FileBucket(tmp_path / "bucket")
    publish_release(bucket, "v1.0.0", CATALOG)
    provider = MemoryProvider(tmp_path / "instances")
    provider.script(succeed())
    outcome = FastController(bucket, provider, print, print).run(RunRequest(job, "v1.0.0"))
    spec = runs.read_spec(bucket, outcome.run_id)
    assert spec.network is network
    assert {k: v for k, v in spec.google_access.items() if v} == access


def test_network_must_be_a_boolean():

    with pytest.raises(BadInput, match="network 'yes' must be true or false"):
        parse_catalog("jobs:\n  j: {container: trainer, command: [python, j.py], network: 'yes'}\n")
