"""The chaos and bad-input suite (`pytest -m chaos`): every test adds what it tried to one
tally, and the session ends with a table of it (pytest_terminal_summary)."""

from __future__ import annotations

import collections

import pytest

# name -> (what it counts, the value it must have at the end, or None when any is fine)
ROWS = {
    "faults_injected": ("faults injected into the bucket (503, 429, dropped connections)", None),
    "faults_survived": ("faults survived (the operation still succeeded, exactly once)", None),
    "bad_inputs_tried": ("bad inputs tried", None),
    "bad_inputs_refused": ("bad inputs refused cleanly (the right error, nothing written)", None),
    "files_leaked": ("files leaked (outside content in the bucket)", 0),
    "log_bytes_lost": ("log bytes lost", 0),
    "instances_left": ("instances left", 0),
}

TALLY: collections.Counter[str] = collections.Counter()


@pytest.fixture
def tally() -> collections.Counter[str]:
    return TALLY


def pytest_terminal_summary(terminalreporter):
    if not TALLY:
        return
    write = terminalreporter.write_line
    terminalreporter.section("chaos and bad-input tally")
    width = max(len(text) for text, _ in ROWS.values())
    for name, (text, must) in ROWS.items():
        value = TALLY.get(name, 0)
        verdict = "" if must is None else ("  ok" if value == must else f"  MUST BE {must}")
        write(f"| {text:<{width}} | {value:>10} |{verdict}")


@pytest.fixture
def faulty_gcs(gcs_emulator, monkeypatch):
    """A fresh bucket on fake-gcs-server, reached through a FaultProxy; yields (proxy, gs:// uri)."""
    import secrets

    from tests.support.fault_proxy import FaultProxy
    from tests.support.gcs import create_bucket

    name = f"chaos-{secrets.token_hex(4)}"
    create_bucket(name)
    with FaultProxy(gcs_emulator).running() as proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.endpoint)
        yield proxy, f"gs://{name}"
