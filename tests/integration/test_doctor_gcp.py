"""`invoke doctor --profile test`: the gcp checks against the emulated Google world (a loopback
token endpoint behind real Application Default Credentials, fakes of Service Usage, Resource
Manager and the Compute API, fake-gcs-server, a registry that wants the token login). Ready,
then each gap named in its row with the exit code of the worst one."""

from __future__ import annotations

import json

import pytest

from mlbatch.release import preflight
from tests.support.gcp_world import gcp_world

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("infra")]

ROWS = ["credentials", "APIs", "release permissions", "run permissions, network", "bucket", "engine", "registry", "packer"]


@pytest.fixture(scope="module")
def world(infra, gcs_emulator, tmp_path_factory):
    with gcp_world(gcs_emulator, tmp_path_factory.mktemp("adc")) as w:
        yield w


def doctor(world, gcs_bucket, *args: str) -> tuple[int, dict]:
    done = world.cli(gcs_bucket, "doctor", "--format", "json", *args, timeout=300)
    return done.returncode, {c["name"]: c for c in json.loads(done.stdout)["checks"]}


def test_a_ready_project_passes_every_check(world, gcs_bucket):
    table = world.cli(gcs_bucket, "doctor", timeout=300)
    assert table.returncode == 0, table.stdout + table.stderr
    assert [line.split("  ")[0] for line in table.stdout.splitlines()[1 : len(ROWS) + 1]] == ROWS
    assert "profile test: ready" in table.stdout
    code, rows = doctor(world, gcs_bucket)
    assert "mlbatch-release@mlbatch-test.iam.gserviceaccount.com" in rows["credentials"]["detail"]


def test_each_gap_is_named_and_the_worst_gives_the_exit_code(world, gcs_bucket):
    world.iam.granted -= {"compute.images.create"}
    world.iam.enabled -= {"artifactregistry.googleapis.com"}
    world.compute.denied_permissions.add("compute.instances.create")
    try:
        code, rows = doctor(world, gcs_bucket)
    finally:
        world.iam.granted, world.iam.enabled = set(preflight.ASKED), set(preflight.SERVICES)
        world.compute.denied_permissions.discard("compute.instances.create")
    assert code == 111
    assert "not enabled: artifactregistry.googleapis.com" in rows["APIs"]["detail"]
    assert "lacks compute.images.create: grant roles/compute.storageAdmin" in rows["release permissions"]["detail"]
    assert "compute.instances.create" in rows["run permissions, network"]["detail"]
    assert all(rows[name]["exit_code"] == 0 for name in ("credentials", "bucket", "engine", "registry"))


def test_without_credentials_the_rest_is_not_checked_and_it_exits_111(world, gcs_bucket, monkeypatch, tmp_path):
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "absent.json"))
    code, rows = doctor(world, gcs_bucket)
    assert code == 111
    assert "Application Default Credentials" in rows["credentials"]["detail"]
    assert rows["APIs"]["detail"].startswith("not checked: no credentials")
