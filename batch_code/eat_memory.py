"""Take memory in 8 MB steps until `--mb` MB are held, for tests/chaos: under the catalog's
`memory_mb` limit the kernel kills it, and the run records "killed: out of memory".

Writes `before.txt` to $MLBATCH_RESULTS_DIR first, so the test sees that what a job wrote
before it was killed is still uploaded.
"""

import argparse
import os
import pathlib

STEP_MB = 8

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--mb", type=int, default=512)
args = parser.parse_args()
results = os.environ.get("MLBATCH_RESULTS_DIR")
if results:
    pathlib.Path(results, "before.txt").write_text("written before taking memory\n")
held = []
for taken in range(STEP_MB, args.mb + STEP_MB, STEP_MB):
    held.append(b"m" * (STEP_MB << 20))  # written, so the pages count against the limit
    print(f"holding {taken} MB", flush=True)
print(f"held {args.mb} MB and was not killed", flush=True)
