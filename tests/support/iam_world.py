"""A gs:// bucket behind the model of its IAM (tests/support/gcs_iam.py), with the three
identities of mlbatch.iam.plan: each has its own service-account key, issued tokens by its
own loopback token endpoint (tests/support/fake_oauth.py), and the bucket's policy holds
exactly the bucket grants the plan makes. `as_identity` points google-cloud-storage's
Application Default Credentials at one identity's key, so mlbatch's own Bucket code talks
to the bucket as that identity."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from mlbatch.core.catalog import checkout_catalog
from mlbatch.core.settings import Settings, load_settings
from mlbatch.iam import plan
from tests.conftest import ROOT, repo_config
from tests.support.fake_oauth import FakeOAuth
from tests.support.fault_proxy import FaultProxy
from tests.support.gcs import create_bucket
from tests.support.gcs_iam import BucketIam, IamGate

PROJECT = "mlbatch-test"
RUNNER = f"mlbatch-runner@{PROJECT}.iam.gserviceaccount.com"


def gcp_settings(bucket: str) -> Settings:
    """The plan's view: a gcp profile naming this bucket (the emulator is not the profile's business)."""
    config = repo_config()
    config["profile"] = "gcp"
    config["profiles"]["gcp"].update(
        project=PROJECT,
        bucket=bucket,
        registry=f"europe-west4-docker.pkg.dev/{PROJECT}/mlbatch",
        service_account=RUNNER,
    )
    return load_settings(config, ROOT, env={})


@dataclasses.dataclass
class IamWorld:
    bucket: str  # gs://name
    iam: BucketIam
    proxy: FaultProxy
    keys: dict[str, Path]  # release | runner | trigger -> key file
    accounts: dict[str, str]
    oauth: dict[str, FakeOAuth]

    @contextlib.contextmanager
    def as_identity(self, key: str) -> Iterator[None]:
        """google-cloud-storage as `key`'s identity, against the proxy (API_ENDPOINT_OVERRIDE: a
        custom endpoint that, unlike STORAGE_EMULATOR_HOST, keeps authentication on)."""
        names = ("GOOGLE_APPLICATION_CREDENTIALS", "STORAGE_EMULATOR_HOST", "API_ENDPOINT_OVERRIDE")
        before = {name: os.environ.get(name) for name in names}
        os.environ.pop("STORAGE_EMULATOR_HOST", None)
        os.environ["GOOGLE_APPLICATION_CREDENTIALS"] = str(self.keys[key])
        os.environ["API_ENDPOINT_OVERRIDE"] = self.proxy.endpoint
        try:
            yield
        finally:
            for name, value in before.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


@contextlib.contextmanager
def iam_world(gcs_emulator: str, directory: Path) -> Iterator[IamWorld]:
    """A fresh bucket, its policy from the plan, the identities' keys, and the enforcing proxy
    on 127.0.0.1."""
    name = f"mlbatch-iam-{secrets.token_hex(4)}"
    create_bucket(name)
    settings = gcp_settings(f"gs://{name}")
    people = plan.identities(settings, checkout_catalog(ROOT))
    iam = BucketIam({role.name(PROJECT): role.permissions for role in plan.CUSTOM_ROLES})
    oauth, keys = {}, {}
    for person in people:
        issuer = FakeOAuth(f"ya29.{person.key}-{secrets.token_urlsafe(12)}", client_email=person.account).start()
        oauth[person.key] = issuer
        keys[person.key] = issuer.write_key(directory / f"{person.key}-key.json", project=PROJECT)
        iam.add_issuer(issuer.authorizes, person.account)
        for grant in person.grants:
            if grant.on == plan.BUCKET:
                iam.grant(grant.role_name(PROJECT), person.member, grant.condition.expression if grant.condition else "")
    try:
        with FaultProxy(gcs_emulator, gate=IamGate(iam, gcs_emulator)).running() as proxy:
            yield IamWorld(f"gs://{name}", iam, proxy, keys, {p.key: p.account for p in people}, oauth)
    finally:
        for issuer in oauth.values():
            issuer.stop()
