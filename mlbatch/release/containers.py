"""Build every containers/*/Dockerfile with the docker SDK, push it, pin it by digest."""

from __future__ import annotations

from collections import deque
from pathlib import Path

from mlbatch.core import labels
from mlbatch.core.catalog import container_names
from mlbatch.core.errors import MlbatchError, PermissionDenied
from mlbatch.core.manifest import Container
from mlbatch.core.scrub import scrub
from mlbatch.ui import Say

# How a registry's refusal of the credentials reads in the engine's push errors.
REFUSED = ("unauthorized", "denied", "authentication required", "no basic auth credentials")


def build_and_push(
    client,
    containers_dir: Path,
    registry: str,
    version: str,
    say: Say,
    auth_config: dict[str, str] | None = None,
    base_image: str = "",
) -> dict[str, Container]:
    """`auth_config` (username, password) is the registry login, or None for a registry without one;
    `base_image` the Dockerfiles' BASE_IMAGE (the pinned base, mlbatch.local.base_images), or "" for their default."""
    pinned = {}
    build_args = {"BASE_IMAGE": base_image} if base_image else {}
    for name in container_names(containers_dir):
        repository = f"{registry}/{name}"
        say(f"building {repository}:{version}" + (f" FROM {base_image}" if base_image else ""))
        _build(client, containers_dir / name, f"{repository}:{version}", version, say, build_args)
        say(f"pushing {repository}:{version}")
        digest = _push(client, repository, version, auth_config)
        say(f"{name}: {repository}@{digest}")
        pinned[name] = Container(name=name, repository=repository, digest=digest)
    return pinned


def _build(client, context: Path, tag: str, version: str, say: Say, build_args: dict[str, str]) -> None:
    tail: deque[str] = deque(maxlen=25)  # kept for the error message
    for chunk in client.api.build(
        path=str(context), tag=tag, rm=True, forcerm=True, decode=True, labels={labels.VERSION: version}, buildargs=build_args
    ):
        if "error" in chunk:
            raise MlbatchError(f"docker build of {tag} failed: " + scrub(f"{chunk['error'].strip()}\n" + "".join(tail)))
        line = chunk.get("stream", "")
        tail.append(line)
        if line.startswith("Step "):
            say(line.strip())


def _push(client, repository: str, tag: str, auth_config: dict[str, str] | None) -> str:
    digest = ""
    for chunk in client.api.push(repository, tag=tag, stream=True, decode=True, auth_config=auth_config):
        if "error" in chunk:
            if any(word in chunk["error"] for word in REFUSED):
                raise PermissionDenied(
                    f"the registry refused the push of {repository}:{tag}: {scrub(chunk['error'])} "
                    "(the release identity needs roles/artifactregistry.writer on the repository)"
                )
            raise MlbatchError(f"docker push of {repository}:{tag} failed: {scrub(chunk['error'])}")
        digest = chunk.get("aux", {}).get("Digest", digest)
    if not digest.startswith("sha256:"):
        raise MlbatchError(f"docker push of {repository}:{tag} reported no digest")
    return digest
