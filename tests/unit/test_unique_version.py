"""The tests' version helper gives versions the version check accepts at every hour of the
day: a clock reading such as %H%M%S starts with 0 before 10:00 UTC, which semver refuses,
and every test that released failed in the morning."""

from __future__ import annotations

import datetime as dt

import pytest

from mlbatch.core.versions import parse_version
from tests.conftest import unique_version

MIDNIGHT = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
EVERY_HOUR = [MIDNIGHT + dt.timedelta(hours=h, minutes=m, seconds=s) for h in range(24) for m, s in ((0, 0), (59, 59))]


@pytest.mark.parametrize("prefix", ["v0.0.1-test", "v0.0.1-chaos", "v0.0.2-e2e", "v0"])
@pytest.mark.parametrize("now", EVERY_HOUR, ids=lambda t: t.strftime("%H:%M:%S"))
def test_unique_version_is_valid_at_every_hour(prefix, now):
    version = unique_version(prefix, now=now)
    assert parse_version(version).tag == version


def test_a_plain_release_prefix_gives_a_release_latest_can_resolve_to():
    version = parse_version(unique_version("v0", now=MIDNIGHT))
    assert version.pre == "" and version.major == 0


def test_later_versions_sort_later():
    from mlbatch.core.versions import sort_key

    early, late = (unique_version("v0", now=MIDNIGHT + dt.timedelta(hours=h)) for h in (1, 11))
    assert sort_key(early) < sort_key(late)


def test_room_is_left_for_the_suffixes_tests_add():
    """Fixtures add `.gce` or `.batch` and a test `.ondemand`; a version holds 40 characters."""
    parse_version(unique_version() + ".batch.ondemand")
