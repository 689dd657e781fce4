"""Several checkouts share one Docker engine: `local.down`, `gc` and the local provider touch
this checkout's containers only (the `org.mlbatch.state-dir` label, mlbatch.core.labels)."""

from __future__ import annotations

import subprocess
import time

import pytest

from mlbatch.core import labels
from mlbatch.core.bucket import open_bucket
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
