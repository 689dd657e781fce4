"""eat-memory's own test: run as the agent runs it, with a small --mb (its limit is the container's)."""

import os
import subprocess
import sys
from pathlib import Path

CODE = Path(__file__).resolve().parents[2] / "batch_code"


def test_eat_memory_holds_what_it_is_asked_for_and_writes_before_it_starts(tmp_path):
    env = {**os.environ, "MLBATCH_RESULTS_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "eat_memory.py", "--mb=16"], cwd=CODE, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["holding 8 MB", "holding 16 MB", "held 16 MB and was not killed"]
    assert (tmp_path / "before.txt").is_file()
