"""The test profile's emulated Google world for release tests: a loopback token endpoint whose
service-account key is the Application Default Credentials, fakes of Service Usage and Resource
Manager granting what the preflight asks, the fake Compute API, and a registry requiring the
`oauth2accesstoken` login (tests/support/registry.py) where the release identity (the issued
token) pushes and pulls, and the runner (the token the metadata server of one of the fake's VMs
running as the runner gives, within the VM's scopes) pulls."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from mlbatch.core.gcp_base import SCOPE
from mlbatch.core.settings import load_settings
from mlbatch.release import preflight
from tests.conftest import ROOT, repo_config
from tests.integration.helpers import INVOKE
from tests.support.fake_compute import FakeCompute, Latencies
from tests.support.fake_iam import FakeIam
from tests.support.fake_oauth import FakeOAuth
from tests.support.registry import READER, WRITER, Caller, Registry, authenticating_registry

PROJECT = "mlbatch-test"
TOKEN = "ya29.fake-" + secrets.token_urlsafe(16)


@dataclasses.dataclass
class World:
    oauth: FakeOAuth
    iam: FakeIam
    compute: FakeCompute
    registry: str  # host:port of the authenticating registry
    key_file: str
    registry_auth: Registry

    def settings(self, bucket: str, **overrides):
        config = repo_config()
        config["profile"] = "test"
        config["profiles"]["test"].update(self.profile(bucket), **overrides)
        return load_settings(config, ROOT)

    def profile(self, bucket: str) -> dict[str, str]:
        return {
            "bucket": bucket,
            "registry": f"{self.registry}/mlbatch",
            "compute_endpoint": self.compute.endpoint,
            "resource_manager_endpoint": self.iam.endpoint,
            "service_usage_endpoint": self.iam.endpoint,
        }

    def cli(self, bucket: str, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess:
        env = {**os.environ, **{f"INVOKE_MLBATCH_PROFILES_TEST_{k.upper()}": v for k, v in self.profile(bucket).items()}}
        return subprocess.run(
            [INVOKE, *args, "--profile", "test"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )


@contextlib.contextmanager
def gcp_world(gcs_emulator: str, directory: Path) -> Iterator[World]:
    """The world, with GOOGLE_APPLICATION_CREDENTIALS naming its key while it runs."""
    oauth = FakeOAuth(TOKEN).start()
    key_file = oauth.write_key(directory / "release-key.json")
    iam = FakeIam(PROJECT, oauth.authorizes, granted=set(preflight.ASKED), enabled=set(preflight.SERVICES)).start()
    compute = FakeCompute(PROJECT, storage_emulator=gcs_emulator, latencies=Latencies.quick()).start()
    test_profile = repo_config()["profiles"]["test"]
    compute.ready_for_runs(test_profile["region"], test_profile["network"], test_profile["service_account"])

    def who(token: str) -> Caller | None:
        if token == TOKEN:  # what mlbatch asks the token endpoint for: cloud-platform
            return Caller(oauth.client_email, (SCOPE,))
        issued = compute.vm_tokens.issued.get(token)
        return Caller(issued.account, issued.scopes) if issued else None

    roles = {oauth.client_email: WRITER, test_profile["service_account"]: READER}
    previous = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    os.environ["GOOGLE_APPLICATION_CREDENTIALS"] = str(key_file)
    try:
        with authenticating_registry(who, roles) as registry:
            yield World(oauth, iam, compute, registry.address, str(key_file), registry)
    finally:
        if previous is None:
            os.environ.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
        else:
            os.environ["GOOGLE_APPLICATION_CREDENTIALS"] = previous
        compute.stop()
        iam.stop()
        oauth.stop()


def registry_tags(world: World, repository: str) -> list[str]:
    """Tags in the authenticating registry, read with the login it expects."""
    bearer = world.registry_auth.auth.bearer(TOKEN, f"repository:mlbatch/{repository}:pull")
    request = urllib.request.Request(
        f"http://{world.registry}/v2/mlbatch/{repository}/tags/list", headers={"Authorization": f"Bearer {bearer}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310 - loopback
            return json.load(resp).get("tags") or []
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return []
        raise
