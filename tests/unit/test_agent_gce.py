import pytest

from mlbatch.agent.gce import needs_registry_login


@pytest.mark.parametrize(
    ("ref", "login"),
    [
        ("europe-west4-docker.pkg.dev/proj/mlbatch/trainer@sha256:ab", True),
        ("gcr.io/proj/trainer@sha256:ab", True),
        ("eu.gcr.io/proj/trainer@sha256:ab", True),
        ("127.0.0.1:5000/trainer@sha256:ab", False),
        ("docker.io/library/python@sha256:ab", False),
    ],
)
def test_only_google_registries_get_the_vm_token(ref, login):
    assert needs_registry_login(ref) is login
