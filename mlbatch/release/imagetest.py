"""Run tests/image (testinfra) against a baked image before it is promoted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mlbatch.core.errors import MlbatchError
from mlbatch.core.names import managed_labels


def test_local_image(client, root: Path, image_ref: str, version: str) -> None:
    """Start the image with a no-op entry point and run testinfra over docker://."""
    container = client.containers.run(
        image_ref,
        entrypoint=["/bin/sleep", "infinity"],
        detach=True,
        auto_remove=False,
        labels=managed_labels() | {"org.mlbatch.role": "image-test"},
    )
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                str(root / "tests" / "image"),
                "-q",
                "-p",
                "no:cacheprovider",
                f"--hosts=docker://{container.id}",
                f"--mlbatch-version={version}",
                "-m",
                "not vm",
            ],
            capture_output=True,
            text=True,
            cwd=root,
        )
    finally:
        container.remove(force=True)
    if result.returncode != 0:
        raise MlbatchError(f"image tests failed for {image_ref}:\n{result.stdout[-3000:]}{result.stderr[-1000:]}")
