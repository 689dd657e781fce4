"""The Docker labels mlbatch writes on containers and images (`org.mlbatch.*`): their names,
here and nowhere else in Python. Packer's template writes the image labels of the local bake
too (packer/mlbatch.pkr.hcl); tests/unit/test_one_place.py holds it to these names.

The GCE/Cloud Batch label `managed-by=mlbatch` is `mlbatch.core.names.MANAGED_LABEL`.
"""

from __future__ import annotations

from pathlib import Path

from mlbatch.core.names import MANAGED_LABEL, managed_labels

# The local bake's image (written by Packer's docker source, read by the release's reuse check).
IMAGE_NAME = "org.mlbatch.image-name"
VERSION = "org.mlbatch.version"  # also on the release's containers
GIT_SHA = "org.mlbatch.git-sha"
INPUT_HASH = "org.mlbatch.input-hash"
AGENT_WHEEL_SHA256 = "org.mlbatch.agent-wheel-sha256"  # the wheel pip installed, by its hash
IMAGE_LABELS = (IMAGE_NAME, VERSION, GIT_SHA, INPUT_HASH, AGENT_WHEEL_SHA256)
# The base image with the extra CA bundle layered on: rebuilt when the bundle changes.
CA_BUNDLE_SHA256 = "org.mlbatch.ca-bundle-sha256"
# A job container: the instance whose agent started it (deleted with it), and what it is for.
INSTANCE = "org.mlbatch.instance"
ROLE = "org.mlbatch.role"

# Several checkouts may share one Docker engine: every container the local profile creates
# names its checkout's state dir, so `invoke local.down`, `gc` and the tests' leftover check
# touch their own only. The agent of a local instance gets it in its environment and puts it
# on the job containers it starts.
STATE_DIR = "org.mlbatch.state-dir"
STATE_DIR_ENV = "MLBATCH_STATE_DIR"


def checkout_labels(state_dir: Path | str) -> dict[str, str]:
    """The labels of a container this checkout creates on the local engine."""
    return {**managed_labels(), STATE_DIR: str(state_dir)}


def checkout_filter(state_dir: Path | str) -> list[str]:
    """Docker's label filter for the containers of this checkout."""
    return [MANAGED_LABEL, f"{STATE_DIR}={state_dir}"]
