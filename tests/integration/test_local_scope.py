"""Several checkouts share one Docker engine: `local.down`, `gc` and the local provider touch
this checkout's containers only (the `org.mlbatch.state-dir` label, mlbatch.core.labels)."""

from __future__ import annotations

import subprocess
import time

import pytest

from mlbatch.core import labels
from mlbatch.core.bucket import open_bucket
from mlbatch.core.errors import MlbatchError
from mlbatch.core.runs import RunSpec
from mlbatch.core.settings import load_settings
from mlbatch.local import infra
from mlbatch.providers.base import InstanceRequest
from mlbatch.providers.local import LocalProvider
from mlbatch.run.records import collect_garbage
from tests.conftest import ROOT, repo_config
from tests.support.releases import publish_release

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("infra")]
IMAGE = "debian:bookworm-slim"


def checkout(state_dir):
    """The settings of a checkout whose state dir is `state_dir` (its own bucket beside it)."""
    config = repo_config()
    config["state_dir"] = str(state_dir)
    config["profiles"]["local"]["bucket"] = f"file://{state_dir}/bucket"
    return load_settings(config, ROOT)


@pytest.fixture
def containers():
    started: list = []
    yield started
    for container in started:
        subprocess.run(["docker", "rm", "-f", container.id], capture_output=True)


def start(containers, name, state_dir, argv=("sleep", "300"), **extra):
    client = infra.docker_client()
    container = client.containers.run(
        IMAGE, list(argv), detach=True, name=name, labels={**labels.checkout_labels(state_dir), **extra}
    )
    containers.append(container)
    return container


def exists(container) -> bool:
    return subprocess.run(["docker", "inspect", container.id], capture_output=True).returncode == 0


def test_local_down_removes_this_checkouts_containers_and_leaves_another_checkouts(tmp_path, containers):
    ours, theirs = checkout(tmp_path / "ours"), checkout(tmp_path / "theirs")
    mine = start(containers, f"mlb-scope-ours-{time.time_ns()}", ours.state_dir)
    other = start(containers, f"mlb-scope-theirs-{time.time_ns()}", theirs.state_dir)
    lines: list[str] = []
    infra.down(ours, lines.append)
    assert not exists(mine) and f"removing container {mine.name}" in lines
    assert exists(other), "another checkout's run must survive our local.down"
    assert infra.status(theirs)["mlbatch containers of this checkout"] == "1"


def test_gc_collects_only_this_checkouts_instances(tmp_path, containers):
    ours, theirs = checkout(tmp_path / "ours"), checkout(tmp_path / "theirs")
    expired = {"role": "instance", "expiry": str(int(time.time()) - 10)}
    mine = start(containers, f"mlb-scope-expired-{time.time_ns()}", ours.state_dir, **expired)
    other = start(containers, f"mlb-scope-other-{time.time_ns()}", theirs.state_dir, **expired)
    assert dict(collect_garbage(LocalProvider(ours), dry_run=False)) == {mine.name: "expired"}
    assert not exists(mine) and exists(other)


def test_a_local_instance_carries_the_checkouts_label_and_hands_it_to_its_agent(tmp_path):
    ours = checkout(tmp_path / "ours")
    manifest = publish_release(open_bucket(ours.bucket))
    job = manifest.jobs["sleep"]
    spec = RunSpec(
        run_id="sleep-20260101-000000-scop", job="sleep", version=manifest.version, bucket=ours.bucket,
        container=manifest.containers["trainer"].ref, code_key="x", code_sha256="0" * 64, argv=tuple(job.command),
        params={}, timeout_seconds=10, created="2026-01-01T00:00:00+00:00", vm_image=IMAGE,
    )  # fmt: skip
    name = f"mlb-scope-instance-{time.time_ns()}"
    provider = LocalProvider(ours)
    # debian's image has no agent: the container only has to exist for its labels and environment
    provider.create(InstanceRequest(name, spec, job, 1, {"role": "instance"}, 60, False), "local")
    try:
        attrs = infra.docker_client().containers.get(name).attrs
        assert attrs["Config"]["Labels"][labels.STATE_DIR] == str(ours.state_dir)
        assert f"{labels.STATE_DIR_ENV}={ours.state_dir}" in attrs["Config"]["Env"]
        assert [i.name for i in provider.list_ours()] == [name]
        assert LocalProvider(checkout(tmp_path / "theirs")).list_ours() == []
    finally:
        provider.delete(name)


def test_delete_removes_the_instance_its_job_containers_and_work_dir_and_nothing_else(tmp_path, containers):
    """Teardown by the engine's list and remove (no inspect of each): the instance, a job container
    its agent left behind, its work dir; another instance's job container stays; a second delete of
    the gone instance is a no-op."""
    ours = checkout(tmp_path / "ours")
    stamp = time.time_ns()
    instance = start(containers, f"mlb-scope-del-{stamp}-1", ours.state_dir, role="instance")
    left = start(containers, f"mlb-scope-del-{stamp}-job", ours.state_dir, **{labels.INSTANCE: instance.name})
    other = start(containers, f"mlb-scope-keep-{stamp}-job", ours.state_dir, **{labels.INSTANCE: f"mlb-scope-keep-{stamp}-1"})
    provider = LocalProvider(ours)
    workdir = ours.state_dir / "instances" / instance.name
    workdir.mkdir(parents=True)
    provider.delete(instance.name)
    assert not exists(instance) and not exists(left) and not workdir.exists()
    assert exists(other)
    provider.delete(instance.name)  # gone already: nothing to do, no error


def first_instance(tmp_path) -> tuple[LocalProvider, InstanceRequest]:
    """A checkout's provider, and what it is asked to create for a run's first attempt."""
    ours = checkout(tmp_path / "ours")
    manifest = publish_release(open_bucket(ours.bucket))
    job = manifest.jobs["sleep"]
    run_id = f"sleep-20260101-000000-{time.time_ns() % 10**6:06d}"
    spec = RunSpec(
        run_id=run_id, job="sleep", version=manifest.version, bucket=ours.bucket,
        container=manifest.containers["trainer"].ref, code_key="x", code_sha256="0" * 64, argv=("sleep", "300"),
        params={}, timeout_seconds=10, created="2026-01-01T00:00:00+00:00", vm_image=IMAGE,
    )  # fmt: skip
    request_labels = {"role": "instance", "run-id": run_id, "attempt": "1"}
    return LocalProvider(ours), InstanceRequest(f"mlb-{run_id}-1", spec, job, 1, request_labels, 60, False)


def test_a_second_create_of_the_same_instance_is_taken_as_done_and_anothers_is_refused(tmp_path, containers):
    """A resumed launch (its launcher died after the create: docs/architecture.md, "Idempotency")
    creates the run's first instance again. The engine answers 409 for the name, as Compute
    Engine does: ours, by its run id and attempt, is taken as done (as GceProvider.create does);
    a container of that name that is not this run's attempt is refused, and left alone."""
    provider, request = first_instance(tmp_path)
    name = request.name
    provider.create(request, "local")
    try:
        first = infra.docker_client().containers.get(name).id
        provider.create(request, "local")
        assert infra.docker_client().containers.get(name).id == first, "the instance that stood is the run's instance"
    finally:
        provider.delete(name)
    foreign = start(containers, name, provider.settings.state_dir, role="instance", **{"run-id": "other-run", "attempt": "1"})
    with pytest.raises(MlbatchError, match=f"{name}.*not this run's attempt.*other-run"):
        provider.create(request, "local")
    assert exists(foreign)


def test_an_instance_created_and_never_started_is_started_by_the_resumed_create(tmp_path, containers):
    """The launcher died between the engine's create and start: the resumed create writes the
    instance file and starts the container that stands."""
    provider, request = first_instance(tmp_path)
    labelled = {**labels.checkout_labels(provider.settings.state_dir), **request.labels}
    stood = infra.docker_client().containers.create(IMAGE, ["true"], name=request.name, labels=labelled)
    containers.append(stood)
    provider.create(request, "local")
    stood.reload()
    assert stood.status != "created", "the resumed create started it"
    assert (provider.settings.state_dir / "instances" / request.name / "instance.json").exists()
