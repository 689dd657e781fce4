"""Promotion of a tested image against the fake Compute API alone (no Docker), with an image copy
longer than a minute. Here rather than in tests/unit: it waits 65 s of real time, as the real
API takes (the unit suite runs in seconds; its image tests shorten the fake's latencies)."""

from __future__ import annotations

import pytest

from mlbatch.release import gce_image
from tests.unit.test_gce_image_ops import add_candidate, api, fake, settings_for  # noqa: F401 - the fixtures

pytestmark = pytest.mark.slow


def test_promotion_outlasts_an_image_insert_longer_than_a_minute(fake):  # noqa: F811 - fixtures
    """As on GCE: the copy takes longer than 60 s and the wait holds up to 2 minutes, so a client
    that gives up on a wait after 60 s fails a release whose image tests passed (issue 15, item 3).
    Real time on purpose: a client timeout cannot be shortened from outside (about 65 s)."""
    fake.latencies.image_insert = 65.0
    lines: list[str] = []
    served = gce_image.promote(settings_for(fake), add_candidate(fake), lines.append)
    assert fake.images[served.name]["status"] == "READY"
    assert any(line.startswith("promoting") and "still running after" in line for line in lines), lines  # progress
