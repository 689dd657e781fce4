"""The jobs' own tests: each script of batch_code/ run as the agent runs it (params as
--name=value, MLBATCH_RESULTS_DIR set) on this machine's Python. `invoke jobs.new NAME`
writes one here for a new job; a job that needs its container's libraries (train-digits:
scikit-learn) is tested through `invoke run-batch` (tests/integration) instead."""

import json
import os
import subprocess
import sys
from pathlib import Path

CODE = Path(__file__).resolve().parents[2] / "batch_code"


def test_sleep_prints_its_ticks_and_writes_its_metric(tmp_path):
    env = {**os.environ, "MLBATCH_RESULTS_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "sleep.py", "--seconds=1", "--message=hi"], cwd=CODE, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "hi 1/1\n"
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"ticks": 1}
