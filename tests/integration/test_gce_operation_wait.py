"""A Compute operation longer than an HTTP client's default timeout, against the fake Compute API
alone (no Docker). Here rather than in tests/unit: it waits 70 s of real time, as the real API
holds a zoneOperations.wait (the unit suite runs in seconds)."""

from __future__ import annotations

import pytest

from tests.unit.test_gce_api import ZONE_A, api, fake, provider, request  # noqa: F401 - the fixtures

pytestmark = pytest.mark.slow


def test_an_operation_longer_than_a_client_timeout_is_waited_for(fake, provider):  # noqa: F811 - fixtures
    """zoneOperations.wait holds up to two minutes; a delete that takes 70 s must not fail at 60."""
    provider.create(request("mlb-slowdelete-1"), ZONE_A)
    fake.faults.operation_seconds = 70
    provider.delete("mlb-slowdelete-1")
    assert fake.find("mlb-slowdelete-1") is None
