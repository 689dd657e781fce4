"""A fake Compute Engine API for tests (see server.py)."""

from tests.support.fake_compute.server import FakeCompute
from tests.support.fake_compute.state import CONTAINER_LABEL, FakeInstance, Faults, Latencies

__all__ = ["CONTAINER_LABEL", "FakeCompute", "FakeInstance", "Faults", "Latencies"]
