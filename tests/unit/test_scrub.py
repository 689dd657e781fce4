"""mlbatch.core.scrub: what other programs print loses anything token-shaped, and keeps what a
person needs to act on the failure."""

from __future__ import annotations

import base64
import json
import os
import secrets
import sys

import pytest

from mlbatch.core import gcp_base
from mlbatch.core.errors import MlbatchError
from mlbatch.core.scrub import MASK, remember, scrub
from mlbatch.release import bake
from tests.support.fake_oauth import FakeOAuth

ACCESS = "ya29.a0AfB_byC" + "x" * 150  # the shape of a Google OAuth 2.0 access token
REFRESH = "1//0gLq3cN" + "y" * 90
JWT = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJydW5uZXIiLCJhY2Nlc3MiOltdfQ.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
BASIC = base64.b64encode(b"oauth2accesstoken:" + ACCESS.encode()).decode()
PEM = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----\n"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        # Packer's line for the ansible provisioner, with a token passed in --extra-vars (hashicorp/packer#11078)
        (
            "==> googlecompute.vm: Executing Ansible: ansible-playbook -e packer_build_name=vm --extra-vars "
            + json.dumps({"prepull_images": [], "prepull_registry_token": ACCESS}),
            ACCESS,
        ),
        (f"Authorization: Bearer {ACCESS}", ACCESS),
        (f"Authorization: Bearer {JWT}", JWT),
        (f"authorization: basic {BASIC}", BASIC),
        (f'{{"token": "{JWT}", "expires_in": 300}}', JWT),
        (f"refresh_token={REFRESH}&grant_type=refresh_token", REFRESH),
        (f"https://oauth2accesstoken:{ACCESS}@europe-west4-docker.pkg.dev/v2/", ACCESS),
        ("https://ci:ghp_s3cr3tValue@github.com/acme/repo.git", "ghp_s3cr3tValue"),
        ("docker login --username x --password=hunter2-not-shaped", "hunter2-not-shaped"),
        ("PASSWORD: correct-horse-battery", "correct-horse-battery"),
        ("client_secret = GOCSPX-abcdefghijklmnop", "abcdefghijklmnop"),
        ("api_key=AIzaSyA-1234567890abcdefghijklmnopqrstu", "1234567890abcdefghijklmnopqrstu"),
        ('{"auths": {"127.0.0.1:5000": {"auth": "b2F1dGgyYWNjZXNzdG9rZW46c2VjcmV0"}}}', "b2F1dGgyYWNjZXNzdG9rZW46c2VjcmV0"),
        ("?access_token=opaque-value-123&alt=json", "opaque-value-123"),
        ("MLBATCH_PREPULL_REGISTRY_TOKEN='quoted value' next", "value"),
        ('{"password": "with \\"escaped\\" quotes", "user": "x"}', "quotes"),
        (json.dumps({"type": "service_account", "private_key": PEM}), "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"),
        (PEM, "BKcwggSjAgEAAoIBAQC7"),
        (f"fatal: [default]: FAILED! => {{'msg': 'login to {ACCESS[:60]}'}}", ACCESS[:60]),
    ],
)
def test_secrets_are_masked(text, secret):
    scrubbed = scrub(text)
    assert secret not in scrubbed
    assert MASK in scrubbed


@pytest.mark.parametrize(
    "text",
    [
        "TASK [prepull : Log in to each registry that takes the VM's token] ****",
        "fatal: [default]: FAILED! => changed=false msg: Could not find or access '/tmp/ca.pem' on the Ansible Controller.",
        "docker pull --quiet 127.0.0.1:5000/mlbatch-prepull-probe@sha256:" + "0123456789abcdef" * 4,
        "docker login --username oauth2accesstoken --password-stdin europe-west4-docker.pkg.dev",
        "default                    : ok=12   changed=7    unreachable=0    failed=1    skipped=2",
        "Build 'googlecompute.vm' errored after 2 minutes: Error executing Ansible: Non-zero exit status: exit status 2",
        "Install basic packages for the agent",
        'WWW-Authenticate: Bearer realm="https://europe-west4-docker.pkg.dev/v2/token",service="x"',
        "the registry answered 401 (no basic auth credentials)",
        "",
    ],
)
def test_what_a_person_needs_is_kept(text):
    assert scrub(text) == text


def test_every_occurrence_goes_and_the_rest_stays():
    text = f"first {ACCESS}\nsecond line\nthird {ACCESS} end"
    assert scrub(text) == f"first ya29.{MASK}\nsecond line\nthird ya29.{MASK} end"


def test_packers_output_loses_its_tokens_in_progress_and_in_the_error():
    """bake._stream over a real process printing what Packer 1.7+ prints with a token in --extra-vars
    (hashicorp/packer#11078), then failing: neither the progress nor the error holds it."""
    lines = [
        "==> googlecompute.vm: Provisioning with Ansible...",
        '==> googlecompute.vm: Executing Ansible: ansible-playbook --extra-vars {"prepull_registry_token":"' + ACCESS + '"}',
        f"    googlecompute.vm: TASK [prepull : Log in with {ACCESS}]",
        "Build 'googlecompute.vm' errored after 1 minute: Error executing Ansible: Non-zero exit status: exit status 2",
    ]
    script = f"import sys\nfor line in {lines!r}:\n    print(line)\nsys.exit(1)"
    said: list[str] = []
    with pytest.raises(MlbatchError) as failure:
        bake._stream([sys.executable, "-c", script], dict(os.environ), said.append)
    assert ACCESS not in str(failure.value) and not [line for line in said if ACCESS in line]
    assert "Executing Ansible: ansible-playbook" in str(failure.value) and "exit status 2" in str(failure.value)
    assert said == ["Provisioning with Ansible", "TASK [prepull : Log in with ya29.***]"]


def test_a_remembered_secret_goes_whatever_its_shape():
    opaque = "opaque-" + secrets.token_hex(12)  # no pattern knows this shape
    assert scrub(f"login with {opaque} failed") == f"login with {opaque} failed"
    remember(opaque)
    remember("short")  # too short to replace everywhere: left to the patterns
    assert scrub(f"login with {opaque} failed; {opaque}") == f"login with {MASK} failed; {MASK}"
    assert scrub("a short note") == "a short note"


def test_the_application_default_credentials_token_is_remembered(tmp_path, monkeypatch):
    """core.gcp_base registers the token it gets, so a tool that prints it (a registry echoing its
    login, git naming a remote) is scrubbed even when the token has no known shape."""
    opaque = "adc-" + secrets.token_hex(16)
    oauth = FakeOAuth(opaque).start()
    try:
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(oauth.write_key(tmp_path / "key.json")))
        credentials, _ = gcp_base.default_credentials()
    finally:
        oauth.stop()
    assert credentials.token == opaque
    assert opaque not in scrub(f"docker login -p {opaque} said: denied for {opaque}")
