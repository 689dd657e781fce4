"""What a sweep node's attempts share (agent/runner.py `Reuse`): the code bundle fetched and checked
once, the container checked once; every attempt still has its own work folder, log and records."""

from __future__ import annotations

import dataclasses

from mlbatch.agent.runner import Attempt, Reuse
from mlbatch.core.bucket import FileBucket
from mlbatch.core.bundle import build_bundle
from mlbatch.core.sweeps import RecordKeys
from tests.unit.test_records import SPEC


class CountingBucket(FileBucket):
    reads = 0

    def read(self, key: str) -> bytes:
        self.reads += 1
        return super().read(key)


def test_a_nodes_attempts_fetch_the_code_once_and_check_the_container_once(tmp_path, monkeypatch):
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "job.py").write_text("print('hello')\n")
    bundle = build_bundle(tmp_path / "code")
    bucket = CountingBucket(tmp_path / "bucket")
    bucket.write(SPEC.code_key, bundle.data)
    spec = dataclasses.replace(SPEC, bucket=bucket.uri, code_sha256=bundle.sha256)
    monkeypatch.setattr("mlbatch.agent.runner.open_bucket", lambda uri: bucket)
    checks: list[str] = []
    monkeypatch.setattr("mlbatch.agent.runner.Attempt._pull", lambda self, client, login: checks.append(self.spec.container))
    reuse = Reuse(code_dir=tmp_path / "node" / "code")
    codes = []
    for task in range(3):
        keys = RecordKeys.for_task(spec.run_id, task)
        attempt = Attempt(spec, 1, "mlb-node-n1", tmp_path / "node" / f"task-{task}", keys)
        attempt.pull(None, False, reuse)
        codes.append(attempt.fetch(reuse))
        attempt.log.close()
    assert codes == [tmp_path / "node" / "code"] * 3 and (codes[0] / "job.py").read_text() == "print('hello')\n"
    assert bucket.reads == 1 and checks == [spec.container], "fetched and checked for the first task only"
