"""A fake Cloud Batch API for tests (see server.py)."""

from tests.support.fake_batch.server import FakeBatch
from tests.support.fake_batch.state import OWNER_LABEL, FakeJob, Faults

__all__ = ["OWNER_LABEL", "FakeBatch", "FakeJob", "Faults"]
