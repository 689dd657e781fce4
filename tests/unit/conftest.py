"""Fixtures for the controller's fast tests: a file:// bucket with a release, the in-memory
provider, and a controller whose waits are shortened (its decisions are the same); for every
unit test, the waits between tries of a Google API call and of an operation wait shortened too."""

from __future__ import annotations

import pytest

from mlbatch.core import gcp_base
from mlbatch.core.bucket import FileBucket
from mlbatch.gcp.operations import Waiter
from mlbatch.run.controller import Controller
from mlbatch.run.deadlines import Margins
from tests.support.memory_provider import MemoryProvider
from tests.support.releases import publish_release

VERSION = "v1.0.0"


class FastController(Controller):
    poll = 0.001
    state_check_every = 0.0
    margins = Margins(start=0, run_grace=0, upload=0)
    attach_poll = 0.001


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    """10 ms before the first retry of a transient error (not 0.2 s) and 20 ms before asking again
    after a wait that answered early (not 0.5 s): the same tries in the same order, sooner."""
    monkeypatch.setattr(gcp_base, "BACKOFF_FIRST", 0.01)
    monkeypatch.setattr(Waiter, "pause", 0.02)


@pytest.fixture
def bucket(tmp_path):
    bucket = FileBucket(tmp_path / "bucket")
    publish_release(bucket, VERSION)
    return bucket


@pytest.fixture
def provider(tmp_path):
    return MemoryProvider(tmp_path / "instances", zones=("europe-west4-a", "europe-west4-b"))


@pytest.fixture
def lines():
    return []


@pytest.fixture
def controller(bucket, provider, lines):
    return FastController(bucket, provider, lines.append, lines.append)
