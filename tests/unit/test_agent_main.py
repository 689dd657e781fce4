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


def test_a_job_container_carries_its_instance_and_the_checkouts_label_when_the_instance_has_one(monkeypatch):
    from mlbatch.agent.runner import _job_labels
    from mlbatch.core import labels

    monkeypatch.delenv(labels.STATE_DIR_ENV, raising=False)
    assert _job_labels("mlb-x-1") == {"managed-by": "mlbatch", labels.INSTANCE: "mlb-x-1", labels.ROLE: "job"}  # a VM
    monkeypatch.setenv(labels.STATE_DIR_ENV, "/srv/checkout/.mlbatch")  # a local instance (LocalProvider sets it)
    assert _job_labels("mlb-x-1")[labels.STATE_DIR] == "/srv/checkout/.mlbatch"
