"""The release preflight against the fakes of its two APIs (no Docker): real google-auth
credentials from a service-account key whose token endpoint is on loopback, Resource Manager and
Service Usage checking the token. With Shared VPC the subnet permission is asked on the host project."""

from __future__ import annotations

import pytest

from mlbatch.core.errors import ExitCode, MlbatchError
from mlbatch.core.settings import load_settings
from mlbatch.gcp.clients import Clients
from mlbatch.release import preflight
from tests.conftest import ROOT, repo_config
from tests.support.fake_iam import FakeIam
from tests.support.fake_oauth import FakeOAuth

PROJECT, HOST = "mlbatch-test", "mlbatch-host-net"
SUBNET = set(preflight.NETWORK_PERMISSIONS)


@pytest.fixture(scope="module")
def oauth(tmp_path_factory):
    server = FakeOAuth("ya29.fake-preflight").start()
    key = server.write_key(tmp_path_factory.mktemp("adc") / "key.json")
    yield server, key
    server.stop()


@pytest.fixture
def iam(oauth, monkeypatch):
    server, key = oauth
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    fake = FakeIam(PROJECT, server.authorizes, granted=set(preflight.ASKED), enabled=set(preflight.SERVICES)).start()
    yield fake
    fake.stop()


def check(iam, **profile):
    config = repo_config()
    config["profile"] = "test"
    config["profiles"]["test"].update(
        bucket="gs://unused-bucket", resource_manager_endpoint=iam.endpoint, service_usage_endpoint=iam.endpoint, **profile
    )
    settings = load_settings(config, ROOT, env={})
    preflight.check(settings, Clients(settings), "mlbatch-release@mlbatch-test.iam.gserviceaccount.com")


def test_everything_granted_passes(iam):
    check(iam)


def test_with_shared_vpc_the_subnet_permission_is_the_host_projects(iam):
    iam.granted -= SUBNET  # held on the host project only, as roles/compute.networkUser is granted there
    iam.granted_on[HOST] = set(SUBNET)
    check(iam, network_project=HOST)
    iam.granted_on[HOST] = set()
    with pytest.raises(MlbatchError) as info:
        check(iam, network_project=HOST)
    assert info.value.exit_code == ExitCode.PERMISSION_DENIED
    assert f"compute.subnetworks.use: grant roles/compute.networkUser on project {HOST}" in str(info.value)


def test_everything_missing_is_named_in_one_message(iam):
    iam.granted -= {"compute.images.create", "compute.subnetworks.use"}
    iam.enabled -= {"compute.googleapis.com"}
    with pytest.raises(MlbatchError) as info:
        check(iam)
    message = str(info.value)
    assert "API compute.googleapis.com is not enabled" in message
    assert f"compute.images.create: grant roles/compute.storageAdmin on project {PROJECT}" in message
    assert f"compute.subnetworks.use: grant roles/compute.networkUser on project {PROJECT}" in message


REPOSITORY = "europe-west4-docker.pkg.dev/mlbatch-test/mlbatch"
RUNNER = "projects/mlbatch-test/serviceAccounts/mlbatch-runner@mlbatch-test.iam.gserviceaccount.com"


def test_the_repository_and_the_runner_account_are_asked_where_their_grants_are(iam):
    """roles/artifactregistry.writer on the repository and roles/iam.serviceAccountUser on the
    runner account (mlbatch.iam.plan) pass, though the project holds neither; without them,
    the message names the resource to grant them on."""
    iam.granted -= set(preflight.REPOSITORY_PERMISSIONS) | set(preflight.RUNNER_ACCOUNT_PERMISSIONS)
    repository = "projects/mlbatch-test/locations/europe-west4/repositories/mlbatch"
    iam.granted_on[repository] = set(preflight.REPOSITORY_PERMISSIONS)
    iam.granted_on[RUNNER] = set(preflight.RUNNER_ACCOUNT_PERMISSIONS)
    settings = {"registry": REPOSITORY, "service_account": RUNNER.rsplit("/", 1)[1]}
    check(iam, **settings)
    iam.granted_on[repository], iam.granted_on[RUNNER] = set(), set()
    with pytest.raises(MlbatchError) as info:
        check(iam, **settings)
    message = str(info.value)
    assert f"grant roles/artifactregistry.writer on repository {REPOSITORY}" in message
    assert "grant roles/iam.serviceAccountUser on service account mlbatch-runner@mlbatch-test.iam" in message
    assert "on project" not in message
