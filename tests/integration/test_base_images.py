"""Base images by digest (issue 16, item 8), on the real engine and the local registry (Docker
Hub is out of reach here): `images.refresh-bases` resolves a tag to its digest through the
registry API; the release builds FROM the pinned digest with the CA bundle layered on, falls
back to the local base only on the local and test profiles, saying so, and the gcp profile
refuses a base it cannot pin."""

from __future__ import annotations

import dataclasses
import io
import secrets
import shutil
from pathlib import Path

import pytest

from mlbatch.core.errors import BadInput, MlbatchError
from mlbatch.local import base_images, infra
from mlbatch.local.infra import docker_client
from tests.conftest import make_settings

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("infra")]
REPOSITORY = "127.0.0.1:5000/mlbatch-base-test"


def _push(tag: str, marker: str) -> str:
    """An image of its own under REPOSITORY:tag (the local base with a file that tells it apart); its digest."""
    client = docker_client()
    image, _ = client.images.build(
        fileobj=io.BytesIO(f"FROM debian:bookworm-slim\nLABEL test.marker={marker}\n".encode()),
        tag=f"{REPOSITORY}:{tag}",
        rm=True,
    )
    client.images.push(REPOSITORY, tag)
    return client.images.get_registry_data(f"{REPOSITORY}:{tag}").id


def _lock(folder: Path, name: str, tag: str, digest: str) -> Path:
    path = folder / base_images.LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# a test lock\n{name}:\n  tag: {tag}\n  digest: {digest}\n  resolved: never\n")
    return path


def test_refresh_resolves_each_tag_to_the_digest_the_registry_names_now(tmp_path):
    tag = f"t{secrets.token_hex(4)}"
    first = _push(tag, "one")
    path = _lock(tmp_path, "base:test", f"{REPOSITORY}:{tag}", "sha256:" + "0" * 64)
    lines: list[str] = []
    assert base_images.refresh(path, docker_client(), lines.append) == ["base:test"]
    assert base_images.load(path)["base:test"].digest == first
    assert path.read_text().startswith("# a test lock\n"), "the lock's comments are kept"
    assert base_images.refresh(path, docker_client(), lines.append) == []  # unchanged: nothing to commit
    second = _push(tag, "two")  # the tag moves, as debian:bookworm-slim does with each point release
    assert second != first
    assert base_images.refresh(path, docker_client(), lines.append) == ["base:test"]
    assert base_images.load(path)["base:test"].digest == second
    assert any(f"now names {second}" in line for line in lines)


def _settings_in(folder: Path, profile: str = "local"):
    """This checkout's local settings, with project_root a folder holding its own lock."""
    return dataclasses.replace(make_settings("file:///tmp/mlbatch-unused"), project_root=folder, profile=profile)


def test_the_release_builds_from_the_pinned_digest_with_the_ca_bundle(tmp_path):
    tag = f"t{secrets.token_hex(4)}"
    digest = _push(tag, "pinned")
    docker_client().images.remove(f"{REPOSITORY}:{tag}")  # so the release must pull it by digest
    _lock(tmp_path, "debian:bookworm-slim", f"{REPOSITORY}:{tag}", digest)
    settings = _settings_in(tmp_path)
    lines: list[str] = []
    base = infra.build_base(settings, docker_client(), lines.append)
    assert base.pinned and base.ref.startswith(f"{base_images.LAYERED_REPOSITORY}:{digest[7:23]}-ca-")
    built = docker_client().images.get(base.ref)
    assert built.labels["test.marker"] == "pinned"  # FROM exactly the pinned bytes
    assert any(f"pulling the pinned base {REPOSITORY}@{digest}" in line for line in lines)
    assert infra.current_base(settings, docker_client()) == base  # the dry run's view, nothing pulled


@pytest.mark.parametrize("profile", ["local", "test"])
def test_an_unpullable_digest_falls_back_to_the_local_base_and_says_so(tmp_path, profile):
    _lock(tmp_path, "debian:bookworm-slim", f"{REPOSITORY}:gone", "sha256:" + "e" * 64)
    lines: list[str] = []
    base = infra.build_base(_settings_in(tmp_path, profile), docker_client(), lines.append)
    assert not base.pinned and base.ref == "debian:bookworm-slim"
    assert any("NOT the pinned digest" in line and "cannot be pulled" in line for line in lines), lines


def test_the_gcp_profile_refuses_a_base_it_cannot_pin(tmp_path):
    _lock(tmp_path, "debian:bookworm-slim", f"{REPOSITORY}:gone", "sha256:" + "e" * 64)
    with pytest.raises(MlbatchError, match="the gcp profile builds only from a pinned base"):
        infra.build_base(_settings_in(tmp_path, "gcp"), docker_client(), lambda line: None)
    # No entry at all: refused with 100 before any side effect (check_release).
    shutil.rmtree(tmp_path / "containers")
    _lock(tmp_path, "debian:trixie-slim", "docker.io/library/debian:trixie-slim", "sha256:" + "e" * 64)
    with pytest.raises(BadInput, match="has no digest in containers/base-images.yaml"):
        base_images.check(_settings_in(tmp_path, "gcp"))
