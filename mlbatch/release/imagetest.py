"""Run tests/image (testinfra) against a baked image before it is promoted."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from mlbatch.core import labels
from mlbatch.core.errors import MlbatchError
from mlbatch.core.scrub import scrub


def run_suite(root: Path, hosts: str, args: Sequence[str], timeout: float | None = None) -> subprocess.CompletedProcess:
    """pytest tests/image against `hosts` (docker://... or ssh://...); `-rf` lists the failed checks."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", str(root / "tests" / "image"), "-q", "-rf", "-p", "no:cacheprovider"]
        + [f"--hosts={hosts}", *args],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=timeout,
    )


def wheel_option(agent_wheel_sha256: str) -> list[str]:
    """The suite's option naming the manifest's agent wheel, when the image records one."""
    return [f"--mlbatch-agent-wheel-sha256={agent_wheel_sha256}"] if agent_wheel_sha256 else []


def failed_checks(output: str) -> list[str]:
    """The test ids pytest's short summary names as FAILED or ERROR."""
    return re.findall(r"^(?:FAILED|ERROR) \S+::(\S+)", output, flags=re.MULTILINE)


def test_local_image(
    client,
    root: Path,
    image_ref: str,
    version: str,
    container_labels: dict[str, str],
    agent_wheel_sha256: str = "",
    gpu: bool = False,
) -> None:
    """Start the image with a no-op entry point and run testinfra over docker:// (the GPU image's checks
    with `gpu`); `agent_wheel_sha256`: the wheel the manifest will name, which the image must have installed."""
    container = client.containers.run(
        image_ref,
        entrypoint=["/bin/sleep", "infinity"],
        detach=True,
        auto_remove=False,
        labels=container_labels | {labels.ROLE: "image-test"},
    )
    try:
        args = [f"--mlbatch-version={version}", "-m", "not vm", *wheel_option(agent_wheel_sha256)]
        args += ["--mlbatch-gpu-image"] if gpu else []
        result = run_suite(root, f"docker://{container.id}", args)
    finally:
        container.remove(force=True)
    if result.returncode != 0:
        raise MlbatchError(f"image tests failed for {image_ref}:\n" + scrub(result.stdout[-3000:] + result.stderr[-1000:]))
