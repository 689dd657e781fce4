"""mlbatch-agent: the instance's entry point.

Reads its instance spec, runs one attempt of the run (pull, fetch, run, upload), records
how it ended, then ends the instance. On SIGTERM (a preemption gives ~30 s) it stops the
job, flushes the log and records the attempt as preempted within 25 s.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import urllib.request
from pathlib import Path
from typing import Any

from mlbatch import __version__
from mlbatch.agent.runner import Preempted, run_attempt
from mlbatch.core.runs import RunSpec

METADATA_URL = "http://metadata.google.internal/computeMetadata/v1/instance/"


def _metadata(path: str) -> str:
    request = urllib.request.Request(METADATA_URL + path, headers={"Metadata-Flavor": "Google"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - the fixed metadata server URL
        return resp.read().decode()


def load_instance_spec() -> dict[str, Any]:
    """Local profile: a file named by MLBATCH_INSTANCE_FILE; GCE: metadata attributes."""
    path = os.environ.get("MLBATCH_INSTANCE_FILE")
    if path:
        return json.loads(Path(path).read_text())
    return {
        "spec": json.loads(_metadata("attributes/mlbatch-run-spec")),
        "attempt": int(_metadata("attributes/mlbatch-attempt")),
        "instance": _metadata("name"),
        "workdir": "/var/lib/mlbatch/work",
    }


def _on_sigterm(signum, frame):
    raise Preempted(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlbatch-agent", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mlbatch-agent {__version__}")
    parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    instance = load_instance_spec()
    spec = RunSpec.from_json(json.dumps(instance["spec"]))
    status = run_attempt(spec, attempt=int(instance["attempt"]), instance=instance["instance"],
                         workdir=Path(instance["workdir"]))
    return 0 if status == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
