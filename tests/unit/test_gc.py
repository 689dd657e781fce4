"""`invoke gc` (records.collect_garbage) against the in-memory provider."""

from __future__ import annotations

from mlbatch.core.names import managed_labels
from mlbatch.providers.base import RUNNING, STOPPED
from mlbatch.run.records import collect_garbage
from tests.support.memory_provider import MemoryProvider

NOW = 1_800_000_000


def provider_with_instances(tmp_path) -> MemoryProvider:
    provider = MemoryProvider(tmp_path)
    ours = {**managed_labels(), "role": "instance"}
    provider.add_foreign("mlb-expired", {**ours, "expiry": str(NOW - 10)})
    provider.add_foreign("mlb-alive", {**ours, "expiry": str(NOW + 3600)})
    provider.add_foreign("mlb-orphan", {**ours, "expiry": str(NOW + 3600)}, state=STOPPED)
    provider.add_foreign("mlb-no-expiry", ours)
    provider.add_foreign("not-ours-expired", {"role": "instance", "expiry": "1"})
    provider.add_foreign("not-ours-stopped", {"managed-by": "someone-else"}, state=STOPPED)
    return provider


def test_gc_removes_only_our_expired_or_orphaned_instances(tmp_path):
    provider = provider_with_instances(tmp_path)
    planned = collect_garbage(provider, dry_run=True, now=NOW)
    assert dict(planned) == {"mlb-expired": "expired", "mlb-orphan": "stopped (orphaned)"}
    assert provider.deleted == [], "a dry run removes nothing"
    assert collect_garbage(provider, dry_run=False, now=NOW) == planned
    assert sorted(provider.deleted) == ["mlb-expired", "mlb-orphan"]
    assert sorted(provider.running()) == ["mlb-alive", "mlb-no-expiry", "not-ours-expired", "not-ours-stopped"]
    assert provider.instances["not-ours-expired"].state == RUNNING


def test_gc_judges_expiry_against_now(tmp_path):
    provider = provider_with_instances(tmp_path)
    later = dict(collect_garbage(provider, dry_run=True, now=NOW + 7200))
    assert later == {"mlb-expired": "expired", "mlb-alive": "expired", "mlb-orphan": "expired"}
