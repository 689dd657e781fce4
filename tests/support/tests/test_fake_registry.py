"""The authenticating registry (tests/support/registry.py) through the real Docker engine: each
identity does what its role and its token's scopes allow, and nothing else."""

from __future__ import annotations

import io
import secrets
import tarfile

import docker
import pytest

from mlbatch.local.infra import docker_client
from tests.support.registry import CLOUD_PLATFORM, READER, WRITER, Caller, authenticating_registry

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("infra")]
READ_ONLY = "https://www.googleapis.com/auth/devstorage.read_only"
COMPUTE = "https://www.googleapis.com/auth/compute"
CALLERS = {
    "tok-release": Caller("release@p.iam.gserviceaccount.com", (CLOUD_PLATFORM,)),
    "tok-runner": Caller("runner@p.iam.gserviceaccount.com", (READ_ONLY,)),
    "tok-runner-no-storage": Caller("runner@p.iam.gserviceaccount.com", (COMPUTE,)),
}
ROLES = {"release@p.iam.gserviceaccount.com": WRITER, "runner@p.iam.gserviceaccount.com": READER}


@pytest.fixture(scope="module")
def registry(infra):
    with authenticating_registry(CALLERS.get, ROLES) as found:
        yield found


@pytest.fixture(scope="module")
def probe_image(infra):
    """A one-file image built FROM scratch: what is pushed and pulled here is the registry's
    auth, not the bytes (pushing debian:bookworm-slim took 4 s of this suite)."""
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, data in (("Dockerfile", b"FROM scratch\nCOPY probe /probe\n"), ("probe", secrets.token_hex(8).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    name = f"mlbatch-registry-probe:{secrets.token_hex(4)}"  # a tag of its own keeps it while others come and go
    image, _ = docker_client().images.build(fileobj=context, custom_context=True, rm=True, tag=name)
    yield image
    docker_client().images.remove(name, force=True)


def auth(token: str) -> dict[str, str]:
    return {"username": "oauth2accesstoken", "password": token}


@pytest.fixture(scope="module")
def pushed(registry, probe_image) -> str:
    """The probe image pushed by the release identity; the tag's reference."""
    client = docker_client()
    repository, tag = f"{registry.address}/mlbatch/probe", secrets.token_hex(4)
    probe_image.tag(repository, tag)
    try:
        client.login(registry=registry.address, reauth=True, **auth("tok-release"))
        for line in client.images.push(repository, tag, stream=True, decode=True, auth_config=auth("tok-release")):
            assert "error" not in line, line
    finally:
        client.images.remove(f"{repository}:{tag}")
    return f"{repository}:{tag}"


def test_the_writer_pushes_and_the_reader_pulls(registry, pushed):
    client = docker_client()
    data = client.images.get_registry_data(pushed, auth_config=auth("tok-runner"))
    assert data.id.startswith("sha256:")
    assert ("runner@p.iam.gserviceaccount.com", "repository:mlbatch/probe:pull") in registry.auth.requests


def test_the_reader_cannot_push(registry, pushed, probe_image):
    client = docker_client()
    repository = f"{registry.address}/mlbatch/probe"
    probe_image.tag(repository, "by-runner")
    try:
        errors = [
            line["error"]
            for line in client.images.push(repository, "by-runner", stream=True, decode=True, auth_config=auth("tok-runner"))
            if "error" in line
        ]
    finally:
        client.images.remove(f"{repository}:by-runner")
    assert errors and "authentication required" in errors[0]


@pytest.mark.parametrize("token", ["tok-runner-no-storage", None, "ya29.nobody-issued-this"])
def test_no_pull_without_a_storage_scope_credentials_or_a_known_token(registry, pushed, token):
    client = docker_client()
    with pytest.raises(docker.errors.APIError):
        client.images.get_registry_data(pushed, auth_config=auth(token) if token else None)


def test_docker_login_takes_a_known_token_and_refuses_others(registry):
    client = docker_client()
    assert client.login(registry=registry.address, reauth=True, **auth("tok-runner"))["Status"] == "Login Succeeded"
    with pytest.raises(docker.errors.APIError, match="(?i)unauthorized|authentication"):
        client.login(registry=registry.address, reauth=True, **auth("ya29.nobody-issued-this"))
