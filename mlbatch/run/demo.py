"""What the demo shows at the end: where the results are and the model's metrics."""

from __future__ import annotations

import json

from mlbatch.core import runs
from mlbatch.core.bucket import Bucket
from mlbatch.run.controller import RunOutcome
from mlbatch.ui import console


def show_metrics(bucket: Bucket, outcome: RunOutcome) -> dict | None:
    prefix = runs.results_of(bucket, outcome.record)
    console.print(f"results: {bucket.url(prefix)}", markup=False)
    for key in bucket.list(prefix):
        console.print(f"  {bucket.url(key)}", markup=False)
    metrics_key = f"{prefix}/metrics.json"
    if not bucket.exists(metrics_key):
        return None
    metrics = json.loads(bucket.read(metrics_key))
    console.print("metrics: " + ", ".join(f"{k}={v}" for k, v in metrics.items()), markup=False)
    return metrics
