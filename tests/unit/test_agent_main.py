"""The agent's entry point reads the local instance file the local provider writes."""

from __future__ import annotations

from mlbatch.agent.main import load_instance_spec
from mlbatch.core.runs import InstanceSpec
from tests.unit.test_records import SPEC


def test_the_local_instance_file_is_an_instance_spec(tmp_path, monkeypatch):
    written = InstanceSpec(spec=SPEC, attempt=3, instance="mlb-x-3", workdir=str(tmp_path))
    (tmp_path / "instance.json").write_text(written.to_json())
    monkeypatch.setenv("MLBATCH_INSTANCE_FILE", str(tmp_path / "instance.json"))
    assert load_instance_spec() == (written, False)
