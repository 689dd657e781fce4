"""What the demo shows at the end: where the results are and the model's metrics."""

from __future__ import annotations

from mlbatch.core import runs
from mlbatch.core.bucket import Bucket
from mlbatch.run.controller import RunOutcome
from mlbatch.run.metrics import read_metrics
from mlbatch.ui import console


def show_metrics(bucket: Bucket, outcome: RunOutcome) -> dict | None:
    prefix = runs.results_of(bucket, outcome.record)
    console.print(f"results: {bucket.url(prefix)}", markup=False)
    for key in bucket.list(prefix):
        console.print(f"  {bucket.url(key)}", markup=False)
    metrics = read_metrics(bucket, prefix)
    if not metrics:
        return None
    console.print("metrics: " + ", ".join(f"{k}={v}" for k, v in metrics.items()), markup=False)
    return metrics
