"""Image management and the one operation waiter (mlbatch.gcp.operations) against the fake
Compute API alone (no Docker). An image insert takes a minute or more (fake.latencies),
globalOperations.wait holds up to 2 minutes and may answer before DONE or with a transient
error; promotion, discard and retention must not fail at any of these after the image tests
passed. The waiter's timings are class attributes, shortened here as the controller's are:
its decisions are the same at any scale."""

from __future__ import annotations

import uuid

import pytest
from google.cloud import compute_v1

from mlbatch.core.errors import ExitCode, MlbatchError
from mlbatch.core.manifest import VmImage
from mlbatch.core.settings import load_settings
from mlbatch.gcp import errors
from mlbatch.gcp.clients import Clients
from mlbatch.gcp.operations import SERVER_HOLD, Waiter
from mlbatch.release import gce_image
from mlbatch.release.targets.gcp import GcpTarget
from tests.conftest import ROOT, repo_config
from tests.support.fake_compute import FakeCompute, Faults, Latencies

PROJECT = "mlbatch-test"
HASH = "ab" * 32


@pytest.fixture(scope="module")
def api():
    fake = FakeCompute(PROJECT, boot_containers=False).start()
    yield fake
    fake.stop()


@pytest.fixture
def fake(api):
    api.faults, api.latencies = Faults(), Latencies.quick()
    yield api
    api.faults, api.latencies = Faults(), Latencies.quick()
    api.images.clear()


def settings_for(fake):
    config = repo_config()
    config["profile"] = "test"
    config["profiles"]["test"].update(bucket="gs://unused-bucket", compute_endpoint=fake.endpoint)
    return load_settings(config, ROOT, env={})


@pytest.fixture
def clients(fake):
    """The clients of the test profile, and an image to copy from."""
    fake.add_image("source-image", "unused:latest")
    return Clients(settings_for(fake))


def add_candidate(fake, name="mlbatch-v1-0-0-20260101000000-candidate") -> VmImage:
    labels = {"managed-by": "mlbatch", "version": "v1-0-0", "git-sha": "abc", "input-hash": HASH[:63]}
    link = fake.add_image(name, "unused:latest", family="mlbatch-candidate", labels=labels)
    fake.images[name]["description"] = "mlbatch v1.0.0 abc"
    return VmImage(name=name, ref=link, input_hash=HASH, baked_by_version="v1.0.0")


def test_promotion_waits_out_a_transient_error_of_the_wait(fake):
    """A 503 from globalOperations.wait is the service saying "try again", not a failed release."""
    fake.faults.reply_errors = {"globalOperations.wait": ["backendError"]}
    served = gce_image.promote(settings_for(fake), add_candidate(fake), lambda line: None)
    assert fake.images[served.name]["status"] == "READY" and fake.calls["globalOperations.wait"] >= 2


def test_promotion_repeats_a_wait_that_answers_before_done(fake):
    """The wait "might return after zero seconds"; the insert is still RUNNING then."""
    fake.latencies.image_insert = 0.5  # three early answers and their pauses (quick_retries) come well before
    fake.faults.early_waits = 3
    lines: list[str] = []
    served = gce_image.promote(settings_for(fake), add_candidate(fake), lines.append)
    assert fake.images[served.name]["status"] == "READY" and "mlbatch-v1-0-0-20260101000000-candidate" not in fake.images


def test_retention_waits_out_a_transient_error_of_the_wait(fake):
    add_candidate(fake, name="mlbatch-old")
    target = GcpTarget(settings_for(fake))
    (image,) = target.list_images()
    fake.faults.reply_errors = {"globalOperations.wait": ["backendError", "backendError"]}
    target.retire_image(image, lambda line: None)
    assert "mlbatch-old" not in fake.images


def test_an_image_operation_that_fails_is_reported_with_its_exit_code(fake):
    """A 403 on the image insert names the permission and exits 111, not a traceback."""
    fake.faults.reply_errors = {"images.insert": ["forbidden"]}
    with pytest.raises(MlbatchError) as info:
        gce_image.promote(settings_for(fake), add_candidate(fake), lambda line: None)
    assert info.value.exit_code == ExitCode.PERMISSION_DENIED and "compute.images.insert" in str(info.value)


# --- the waiter on its own --------------------------------------------------------------


def insert_image(clients: Clients, name: str) -> compute_v1.Operation:
    """An image copy: a global operation that takes fake.latencies.image_insert."""
    image = compute_v1.Image(name=name, source_image=f"projects/{PROJECT}/global/images/source-image")
    request = compute_v1.InsertImageRequest(project=PROJECT, image_resource=image, request_id=str(uuid.uuid4()))
    return clients.compute("ImagesClient").insert_unary(request=request)


def test_the_client_waits_longer_than_the_server_holds_a_wait():
    assert Waiter.call_timeout > SERVER_HOLD == Faults().wait_hold


def test_a_wait_the_client_cuts_off_is_asked_again(fake, clients):
    """A wait held longer than the client's own timeout (a slow network, a server that holds longer)
    ends in a client-side ReadTimeout: transient, so asked again until DONE."""

    class Impatient(Waiter):
        call_timeout = shortest_call = 0.25

    fake.faults.wait_hold, fake.latencies.image_insert = 3.0, 1.0
    op = Impatient(clients, PROJECT).wait(insert_image(clients, "cut-off"), "copying", bound=60)
    assert op.status == compute_v1.Operation.Status.DONE and fake.images["cut-off"]["status"] == "READY"
    assert fake.calls["globalOperations.wait"] >= 2


def test_a_wait_is_bounded(fake, clients):
    class Impatient(Waiter):
        shortest_call = 0.1  # the last call's timeout when the bound is nearly out

    fake.latencies.image_insert = 600.0
    with pytest.raises(MlbatchError, match=r"copying: operation operation-\d+ not done after 0.3s"):
        Impatient(clients, PROJECT).wait(insert_image(clients, "never-done"), "copying", bound=0.3)


def test_a_long_wait_says_so(fake, clients):
    class Talkative(Waiter):
        progress_every = 0.1

    fake.latencies.image_insert = 0.5
    lines: list[str] = []
    Talkative(clients, PROJECT).wait(insert_image(clients, "talkative"), "copying", bound=60, say=lines.append)
    assert lines and all(line.startswith("copying: waiting for operation operation-") for line in lines)
    assert "still running after" in lines[-1]


def test_a_transient_error_of_a_wait_is_retried(fake, clients):
    fake.faults.reply_errors = {"globalOperations.wait": ["backendError", "rateLimitExceeded"]}
    op = Waiter(clients, PROJECT).wait(insert_image(clients, "retried"), "copying", bound=60)
    assert op.status == compute_v1.Operation.Status.DONE and fake.calls["globalOperations.wait"] >= 3


@pytest.mark.parametrize(
    ("reason", "code", "says"),
    [
        ("forbidden", ExitCode.PERMISSION_DENIED, "lacks compute.images.insert"),
        ("quotaExceeded", ExitCode.QUOTA_EXCEEDED, "quota"),
    ],
)
def test_an_api_error_is_the_mlbatch_error_its_reason_means(fake, clients, reason, code, says):
    fake.faults.reply_errors = {"images.insert": [reason]}
    with pytest.raises(MlbatchError) as info, errors.translated("copying"):
        insert_image(clients, "refused")
    assert info.value.exit_code == code and says in str(info.value) and "refused" not in fake.images
