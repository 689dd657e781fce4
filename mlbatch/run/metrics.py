"""A job's metrics: the scalars of the `metrics.json` it writes to $MLBATCH_RESULTS_DIR, read
back from the bucket by `invoke runs` / `runs.show`, a sweep's ranking and the demo."""

from __future__ import annotations

import json
from typing import Any

from mlbatch.core import runs
from mlbatch.core.bucket import Bucket
from mlbatch.core.errors import NotFound

METRICS_FILE = "metrics.json"


def read_metrics(bucket: Bucket, results_prefix: str) -> dict[str, Any]:
    """The scalars of `<results_prefix>/metrics.json`; nothing when the job wrote none (or not a JSON object)."""
    try:
        data = json.loads(bucket.read(f"{results_prefix}/{METRICS_FILE}"))
    except (NotFound, ValueError):
        return {}
    return runs.scalar_metrics(data)
