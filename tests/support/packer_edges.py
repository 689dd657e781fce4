"""Packer's Google edges on loopback: the intercepting proxy to the fake Compute API and the
token endpoint, and a metadata server answering for the machine Packer runs on.

Shared by the bake test and the end-to-end release test: `packer_edges` sets HTTPS_PROXY,
SSL_CERT_FILE, GOOGLE_APPLICATION_CREDENTIALS and GCE_METADATA_HOST in this process's
environment (inherited by Packer and by `invoke` subprocesses) and undoes it on exit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fake_compute import FakeCompute
from tests.support.fake_compute.state import FakeInstance
from tests.support.fake_oauth import FakeOAuth
from tests.support.fake_vm.guest import build_guest_image
from tests.support.fake_vm.metadata import metadata_server
from tests.support.intercept import Proxy, google_routes, intercepting_proxy


def add_debian_cloud(fake: FakeCompute) -> None:
    """The public source image Packer starts from: debian-cloud/debian-12, a bare guest."""
    fake.add_image("debian-12-bookworm-v20261101", build_guest_image(), family="debian-12", project="debian-cloud", labels={})


@contextlib.contextmanager
def packer_edges(fake: FakeCompute, oauth: FakeOAuth, key: Path) -> Iterator[Proxy]:
    # The machine Packer runs on (a CI runner VM): its metadata server answers who it is.
    runner = FakeInstance(
        zone="europe-west4-a", body={"name": "ci-runner", "id": "1", "serviceAccounts": [{"email": oauth.client_email}]}
    )
    host_metadata = metadata_server(fake, runner)
    # This machine's Packer is Debian's 1.6.6 build, whose image insert names the disk by a URL
    # the real API refuses (intercept.py): the proxy repairs it, and the tests say so.
    try:
        routes = google_routes(fake.endpoint, oauth.token_uri)
        with intercepting_proxy(routes, token=oauth.token, repair_source_disk=True) as proxy:
            env = {
                **proxy.env(),
                "GOOGLE_APPLICATION_CREDENTIALS": str(key),
                "GCE_METADATA_HOST": f"127.0.0.1:{host_metadata.server_port}",
            }
            mp = pytest.MonkeyPatch()
            for name, value in env.items():
                mp.setenv(name, value)
            try:
                yield proxy
            finally:
                mp.undo()
    finally:
        host_metadata.shutdown()
