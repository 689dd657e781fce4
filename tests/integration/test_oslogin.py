"""The image-test VM where the org policy compute.requireOsLogin is enforced: the fake Compute API
ignores `ssh-keys` metadata (tests/support/fake_oslogin.py says from which page), so the key the
image test puts there no longer lets it in; with `os_login: true` it imports the key into the
release identity's OS Login profile and logs in as that profile's user, then removes the key."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import pytest

from mlbatch.providers.gce import GceProvider
from mlbatch.release import vmtest
from tests.integration.helpers import fake_compute_settings
from tests.support.fake_compute import FakeCompute
from tests.support.fake_oauth import FakeOAuth
from tests.support.fake_oslogin import FakeOsLogin
from tests.support.fake_vm.guest import build_guest_image

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("infra")]


@pytest.fixture(scope="module")
def org(infra):
    """A project under the org policy: the fake Compute API with OS Login enforced, a bare debian-12 guest image."""
    oslogin = FakeOsLogin().start()
    fake = FakeCompute("mlbatch-test").start()
    fake.os_login = oslogin
    link = fake.add_image("debian-12-guest", build_guest_image())
    try:
        yield fake, oslogin, link
    finally:
        fake.stop()
        oslogin.stop()


@pytest.fixture
def short_tmp():
    """A short folder: ssh's ControlPath (a unix socket) must fit in 108 bytes."""
    with tempfile.TemporaryDirectory(prefix="ol-") as tmp:
        yield Path(tmp)


def ssh(user: str, address: str, key: Path, directory: Path) -> subprocess.CompletedProcess:
    config = vmtest.ssh_config(directory, key)
    return subprocess.run(
        ["ssh", "-F", str(config), "-o", "BatchMode=yes", f"{user}@{address}", "sudo", "-n", "true"],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_metadata_keys_do_not_let_the_image_test_in(org, short_tmp):
    tmp_path = short_tmp
    fake, _, link = org
    provider = GceProvider(fake_compute_settings(fake.endpoint))
    key = vmtest.new_key(tmp_path)
    address = provider.create_test_vm("mlb-imagetest-meta", link, vmtest.SSH_USER, key.with_suffix(".pub").read_text())
    try:
        refused = ssh(vmtest.SSH_USER, address, key, tmp_path)
    finally:
        provider.delete("mlb-imagetest-meta")
    assert refused.returncode == 255 and "Permission denied" in refused.stderr, refused.stderr


def test_with_os_login_the_image_test_logs_in_as_its_profile_user(org, short_tmp, monkeypatch):
    tmp_path = short_tmp
    fake, oslogin, link = org
    settings = fake_compute_settings(fake.endpoint, os_login=True, oslogin_endpoint=oslogin.endpoint)
    provider = GceProvider(settings)
    key = vmtest.new_key(tmp_path)
    public_key = key.with_suffix(".pub").read_text()
    # The release identity: a service-account key whose token endpoint is the loopback one.
    oauth = FakeOAuth("ya29.fake-oslogin").start()
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(oauth.write_key(tmp_path / "release-key.json")))
    release_identity = oauth.client_email
    said: list[str] = []
    with vmtest.login(settings, public_key, said.append) as user:
        assert user == oslogin.username(release_identity) and user.startswith("sa_")
        address = provider.create_test_vm("mlb-imagetest-oslogin", link, user, public_key)
        try:
            allowed = ssh(user, address, key, tmp_path)
        finally:
            provider.delete("mlb-imagetest-oslogin")
        assert allowed.returncode == 0, allowed.stderr
    assert oslogin.profiles[release_identity] == {}, "the test's key is removed from the profile"
    body = next(b for m, p, b in fake.requests if m == "POST" and b and b.get("name") == "mlb-imagetest-oslogin")
    assert {"key": "enable-oslogin", "value": "TRUE"} in body["metadata"]["items"]
    assert any("OS Login as sa_" in line for line in said)
    oauth.stop()
