"""Print a line a second: for timeouts, cancellation and preemption."""

import argparse
import json
import os
import pathlib
import time

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--seconds", type=int, default=30)
parser.add_argument("--message", default="tick")
args = parser.parse_args()
for i in range(args.seconds):
    print(f"{args.message} {i + 1}/{args.seconds}", flush=True)
    time.sleep(1)
results = os.environ.get("MLBATCH_RESULTS_DIR")
if results:  # a metric per run, so sweeps of this job have something to rank
    pathlib.Path(results, "metrics.json").write_text(json.dumps({"ticks": args.seconds}) + "\n")
