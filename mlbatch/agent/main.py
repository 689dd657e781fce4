"""mlbatch-agent: the instance's entry point.

Reads its instance spec, runs one attempt of the run (pull, fetch, run, upload), records
how it ended, then ends the instance: the local instance's container exits; a GCE VM
deletes itself. On SIGTERM (a preemption gives ~30 s) it stops the job, flushes the log
and records the attempt as preempted within 25 s.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from mlbatch import __version__
from mlbatch.agent.runner import Preempted, run_attempt
from mlbatch.core.runs import PREEMPTED, SUCCEEDED, InstanceSpec


def load_instance_spec() -> tuple[InstanceSpec, bool]:
    """Local profile: the file named by MLBATCH_INSTANCE_FILE; GCE: metadata attributes."""
    path = os.environ.get("MLBATCH_INSTANCE_FILE")
    if path:
        return InstanceSpec.from_json(Path(path).read_text(), path), False
    from mlbatch.agent import gce

    return gce.instance_spec(), True


def _on_sigterm(signum, frame):
    raise Preempted(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlbatch-agent", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mlbatch-agent {__version__}")
    parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    instance, on_gce = load_instance_spec()
    status = run_attempt(
        instance.spec,
        attempt=instance.attempt,
        instance=instance.instance,
        workdir=Path(instance.workdir),
        registry_login=on_gce,
    )
    if on_gce and status != PREEMPTED:  # a preempted VM is being stopped by the platform already
        from mlbatch.agent import gce

        gce.delete_self()
    return 0 if status == SUCCEEDED else 1


if __name__ == "__main__":
    sys.exit(main())
