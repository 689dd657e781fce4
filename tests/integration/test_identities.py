"""The three identities against a bucket that enforces the documented condition form: the
model of Cloud Storage's IAM in front of fake-gcs-server (tests/support/gcs_iam.py), whose
policy holds exactly the bucket grants of mlbatch.iam.plan, each identity talking through
mlbatch's own Bucket code with its own service-account key. A model of IAM, not IAM."""

from __future__ import annotations

import os
import subprocess

import pytest
from google.api_core import exceptions as gexc

from mlbatch.core import manifest as manifests
from mlbatch.core import runs
from mlbatch.core.bucket import open_bucket, write_immutable
from mlbatch.core.errors import BadInput, PermissionDenied
from mlbatch.iam import policy
from mlbatch.release.flow import retain_until, upload_code
from tests.conftest import ROOT
from tests.integration.helpers import INVOKE
from tests.support.iam_world import gcp_settings, iam_world

VERSION = "v1.2.3"
MANIFEST = manifests.manifest_key(VERSION)
RUN = "train-digits-20260101-000000-abcd"


@pytest.fixture
def world(gcs_emulator, tmp_path):
    with iam_world(gcs_emulator, tmp_path) as made:
        with made.as_identity("release"):
            bucket = open_bucket(made.bucket)
            bucket.write(MANIFEST, b'{"version": "v1.2.3"}', immutable=True)
            bucket.write(f"batch_code/{VERSION}/batch_code.tar.gz", b"code", immutable=True)
        yield made


def test_the_release_identity_writes_releases_and_code(world):
    with world.as_identity("release"):
        bucket = open_bucket(world.bucket)
        bucket.write(manifests.manifest_key("v1.2.4"), b"{}", immutable=True)
        assert manifests.list_versions(bucket) == ["v1.2.3", "v1.2.4"]  # a list of releases/, through the prefix attribute
        with pytest.raises(gexc.Forbidden, match="storage.objects.create access"):
            bucket.write(runs.spec_key(RUN), b"{}")  # not the release's folder
    assert any(account == world.accounts["release"] and allowed for account, *_, allowed in world.iam.decisions)


def test_the_runner_reads_releases_and_code_and_writes_runs(world):
    with world.as_identity("runner"):
        bucket = open_bucket(world.bucket)
        assert bucket.read(f"batch_code/{VERSION}/batch_code.tar.gz") == b"code"
        assert bucket.read(MANIFEST) == b'{"version": "v1.2.3"}'
        log = runs.attempt_key(RUN, 1, "log")
        bucket.append(log, b"line 1\n", at=0)
        bucket.append(log, b"line 2\n", at=7)  # compose onto the object, then delete the part
        bucket.write(runs.attempt_key(RUN, 1, "attempt.json"), b"{}")
        bucket.write(runs.attempt_key(RUN, 1, "attempt.json"), b'{"again": 1}')  # an overwrite under runs/
        assert bucket.read(log) == b"line 1\nline 2\n"


def test_the_runner_cannot_replace_or_delete_a_manifest(world):
    with world.as_identity("runner"):
        bucket = open_bucket(world.bucket)
        with pytest.raises(gexc.Forbidden) as replaced:
            bucket.write(MANIFEST, b'{"version": "v1.2.3", "containers": "evil"}')
        blob = bucket._bucket.blob(MANIFEST)  # the Bucket seam has no delete: ask the client itself
        with pytest.raises(gexc.Forbidden) as deleted:
            blob.delete()
        with pytest.raises(gexc.Forbidden):
            bucket.write(manifests.manifest_key("v9.9.9"), b"{}", immutable=True)  # nor add a release
        with pytest.raises(gexc.Forbidden):
            list(bucket.list("releases"))  # nor list them: its read grant has no list half
    assert "mlbatch-runner@mlbatch-test.iam.gserviceaccount.com does not have storage.objects.create access" in str(
        replaced.value
    )
    assert "storage.objects.delete access" in str(deleted.value)
    with world.as_identity("release"):
        assert open_bucket(world.bucket).read(MANIFEST) == b'{"version": "v1.2.3"}'


def test_the_trigger_writes_its_records_and_reads_releases(world):
    with world.as_identity("trigger"):
        bucket = open_bucket(world.bucket)
        assert manifests.resolve_version(bucket, "latest") == VERSION
        bucket.write(runs.idempotency_record_key("train-digits", "cron-1"), b"{}", immutable=True)
        data, generation = bucket.read_generation("concurrency/train-digits.json")
        bucket.write_if_generation("concurrency/train-digits.json", b"{}", generation)
        bucket.write(runs.spec_key(RUN), b"{}", immutable=True)
        with pytest.raises(gexc.Forbidden):
            bucket.write(MANIFEST, b"{}")
        with pytest.raises(gexc.Forbidden):
            bucket.read(f"batch_code/{VERSION}/batch_code.tar.gz")  # not its to read


def test_an_unknown_token_and_no_token_are_refused_as_storage_does(world, monkeypatch):
    import requests

    url = f"{world.proxy.endpoint}/storage/v1/b/{world.bucket[5:]}/o/{MANIFEST.replace('/', '%2F')}"
    anonymous = requests.get(url, timeout=30)
    forged = requests.get(url, headers={"Authorization": "Bearer ya29.forged"}, timeout=30)
    assert anonymous.status_code == 401 and anonymous.json()["error"]["errors"][0]["reason"] == "required"
    assert "Anonymous caller does not have storage.objects.get access" in anonymous.json()["error"]["message"]
    assert forged.status_code == 401 and forged.json()["error"]["message"] == "Invalid Credentials"


def test_the_preflight_check_reads_the_policy_and_refuses_a_runner_grant_on_releases(world):
    settings = gcp_settings(world.bucket)
    said: list[str] = []
    with world.as_identity("release"):
        policy.check_runner_cannot_write_releases(settings, None, said.append)  # the plan's policy passes
        assert said == []
        world.iam.grant("roles/storage.objectAdmin", f"serviceAccount:{settings.service_account}")  # the README's old grant
        with pytest.raises(PermissionDenied, match="roles/storage.objectAdmin on the bucket with no condition") as refused:
            policy.check_runner_cannot_write_releases(settings, None, said.append)
    assert refused.value.exit_code == 111
    with world.as_identity("trigger"):  # no grant to read the policy: said, and not refused
        policy.check_runner_cannot_write_releases(settings, None, said.append)
    assert said and "was not checked" in said[0] and "storage.buckets.getIamPolicy" in said[0]
    with world.as_identity("runner"):  # and now the runner really can replace the manifest
        open_bucket(world.bucket).write(MANIFEST, b"replaced")


def test_a_locked_release_holds_against_every_token(world):
    """release_retention_days: the manifest and the code bundle are locked in the insert itself;
    not even a runner misgranted objectAdmin on the whole bucket can replace, delete or unlock them."""
    settings = gcp_settings(world.bucket)
    until = retain_until(settings)
    world.iam.object_retention = True
    key = manifests.manifest_key("v2.0.0")
    with world.as_identity("release"):
        bucket = open_bucket(world.bucket)
        code, _ = upload_code(bucket, ROOT, "v2.0.0", until)
        write_immutable(bucket, key, b'{"version": "v2.0.0"}', until)
        with pytest.raises(gexc.Forbidden, match="retentionPolicyNotMet|subject to object retention"):
            bucket._bucket.blob(key).delete()  # not even the identity that wrote it
    world.iam.grant("roles/storage.objectAdmin", f"serviceAccount:{settings.service_account}")
    with world.as_identity("runner"):
        bucket = open_bucket(world.bucket)
        with pytest.raises(gexc.Forbidden, match="subject to object retention"):
            bucket.write(key, b"replaced")
        with pytest.raises(gexc.Forbidden, match="subject to object retention"):
            bucket.write(code.uri.removeprefix(world.bucket + "/"), b"other code")
        blob = bucket._bucket.get_blob(key)
        blob.retention.mode = None
        blob.retention.retain_until_time = None
        with pytest.raises(gexc.Forbidden, match="Locked"):
            blob.patch(override_unlocked_retention=True)
        assert bucket.read(key) == b'{"version": "v2.0.0"}'


def test_the_preflight_refuses_a_lock_the_bucket_cannot_hold(world):
    settings = gcp_settings(world.bucket)
    said: list[str] = []
    with world.as_identity("release"):
        with pytest.raises(BadInput, match="does not allow object retention") as refused:
            policy.check_object_retention(settings, None, said.append)
        world.iam.object_retention = True
        policy.check_bucket(settings, None, said.append)
        with pytest.raises(BadInput, match="object retention is not enabled|Object retention is not enabled"):
            world.iam.object_retention = False  # the insert itself is refused too, with nothing written
            try:
                write_immutable(open_bucket(world.bucket), manifests.manifest_key("v3.0.0"), b"{}", retain_until(settings))
            except gexc.BadRequest as exc:
                raise BadInput(str(exc)) from None
    assert refused.value.exit_code == 100 and said == []


def test_invoke_iam_check_reads_the_policy_as_the_release_identity(world):
    profile = {"PROJECT": "mlbatch-test", "BUCKET": world.bucket, "SERVICE_ACCOUNT": gcp_settings(world.bucket).service_account}
    profile["REGISTRY"] = "europe-west4-docker.pkg.dev/mlbatch-test/mlbatch"
    env = {k: v for k, v in os.environ.items() if k != "STORAGE_EMULATOR_HOST"}  # the gcp profile refuses emulators
    env.update({f"INVOKE_MLBATCH_PROFILES_GCP_{k}": v for k, v in profile.items()})
    env.update(GOOGLE_APPLICATION_CREDENTIALS=str(world.keys["release"]), API_ENDPOINT_OVERRIDE=world.proxy.endpoint)

    def check() -> subprocess.CompletedProcess:
        return subprocess.run(
            [INVOKE, "iam.check", "--profile", "gcp"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )

    passed = check()
    assert passed.returncode == 0 and "ok: the runner" in passed.stdout, passed.stdout + passed.stderr
    world.iam.grant("roles/storage.objectUser", "allAuthenticatedUsers")
    refused = check()
    assert refused.returncode == 111 and "allAuthenticatedUsers holds roles/storage.objectUser" in refused.stderr, refused.stderr
