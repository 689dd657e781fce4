"""Shared fixtures. Docker tests use the real engine and registry (`invoke local.up`
starts them; the `infra` fixture does the same), buckets live in temp folders or
fake-gcs-server, and every test leaves no mlbatch container behind."""

from __future__ import annotations

import datetime as dt
import os
import secrets
from pathlib import Path

import pytest
import yaml

from mlbatch.core import labels
from mlbatch.core.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]


def repo_config() -> dict:
    return yaml.safe_load((ROOT / "invoke.yaml").read_text())["mlbatch"]


def make_settings(bucket: str, **profile_overrides) -> Settings:
    config = repo_config()
    config["profiles"]["local"].update(bucket=bucket, **profile_overrides)
    return load_settings(config, ROOT)


# Test versions count seconds from here, plus 10**8 so the count never starts with 0.
_VERSION_EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def unique_version(prefix: str = "v0.0.1-test", now: dt.datetime | None = None) -> str:
    """A version no other test run has used: `prefix` plus a numeric identifier that grows
    with time. A pre-release `prefix` (v0.0.1-test) gets a dotted identifier
    (v0.0.1-test.129062400042); a plain release (v0) gets minor and patch
    (v0.129062400.42), which `--version latest` can resolve to. The identifier counts
    seconds, never a clock reading such as %H%M%S: that gives leading zeros before 10:00,
    which semver refuses (tests/unit/test_unique_version.py). It is short, as tests add
    suffixes (`.gce.ondemand`) within the version's 40 characters."""
    seconds = 10**8 + int(((now or dt.datetime.now(dt.UTC)) - _VERSION_EPOCH).total_seconds())
    salt = secrets.randbelow(1000)
    if "-" in prefix:
        return f"{prefix}.{seconds}{salt:03d}"
    return f"{prefix}.{seconds}.{salt}"


@pytest.fixture(scope="session")
def infra():
    """The local profile's engine, registry and base image (idempotent, like local.up)."""
    from mlbatch.local import infra as local_infra

    settings = make_settings("file:///tmp/mlbatch-unused")
    local_infra.up(settings, lambda message: None)
    yield
    # This checkout's only: other checkouts' runs may share the engine (local.down scopes the same way).
    ours = {"label": labels.checkout_filter(settings.state_dir)}
    leftovers = [c.name for c in local_infra.docker_client().containers.list(all=True, ignore_removed=True, filters=ours)]
    assert not leftovers, f"mlbatch containers left behind: {leftovers}"


@pytest.fixture(scope="session")
def file_bucket(tmp_path_factory) -> str:
    return f"file://{tmp_path_factory.mktemp('bucket')}"


@pytest.fixture(scope="session")
def gcs_emulator():
    """fake-gcs-server for the session; STORAGE_EMULATOR_HOST points at it."""
    from tests.support.gcs import fake_gcs_server

    with fake_gcs_server() as endpoint:
        previous = os.environ.get("STORAGE_EMULATOR_HOST")
        os.environ["STORAGE_EMULATOR_HOST"] = endpoint
        yield endpoint
        if previous is None:
            del os.environ["STORAGE_EMULATOR_HOST"]
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = previous


@pytest.fixture
def gcs_bucket(gcs_emulator) -> str:
    from tests.support.gcs import create_bucket

    name = f"mlbatch-test-{secrets.token_hex(4)}"
    create_bucket(name)
    return f"gs://{name}"


@pytest.fixture(params=["file", "gs"])
def any_bucket(request, tmp_path):
    """Each bucket kind in turn: a contract test runs against both."""
    if request.param == "file":
        return f"file://{tmp_path / 'bucket'}"
    return request.getfixturevalue("gcs_bucket")
