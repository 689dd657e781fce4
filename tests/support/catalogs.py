"""jobs.yaml text for tests that need a job with particular params."""

from __future__ import annotations

from typing import Any

import yaml


def one_job_catalog(params: dict[str, Any], name: str = "train") -> str:
    """A catalog of one job, `name`, in container trainer, with these params."""
    job = {"container": "trainer", "command": ["python", f"{name}.py"], "params": params}
    return yaml.safe_dump({"jobs": {name: job}}, sort_keys=False)  # params in the given order
