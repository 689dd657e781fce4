"""The gce provider against the fake Compute API alone (no Docker: instances run nothing):
error shapes by reason, long operation waits, teardown races, the preemption query, and
the fake's own strictness (filters, pages, image families, cross-field rules, states)."""

from __future__ import annotations

import dataclasses
import json
import threading
import urllib.error
import urllib.parse
import urllib.request

import pytest
from google.cloud import compute_v1

from mlbatch.core.catalog import Job
from mlbatch.core.errors import ExitCode, MlbatchError
from mlbatch.core.settings import load_settings
from mlbatch.providers.base import GONE, RUNNING, STOPPED, CapacityError, InstanceRequest
from mlbatch.providers.gce import GceProvider
from tests.conftest import ROOT, repo_config
from tests.support.fake_compute import FakeCompute, Faults
from tests.unit.test_records import SPEC

PROJECT = "mlbatch-test"
ZONE_A, ZONE_B = "europe-west4-a", "europe-west4-b"
RUNNER = "mlbatch-runner@mlbatch-test.iam.gserviceaccount.com"
T4 = [{"acceleratorType": f"zones/{ZONE_A}/acceleratorTypes/nvidia-tesla-t4", "acceleratorCount": 1}]


@pytest.fixture(scope="module")
def api():
    fake = FakeCompute(PROJECT, boot_containers=False).start()
    fake.add_image("mlbatch-v0-0-1-20260101000000", "unused:latest")
    fake.add_subnetwork("europe-west4", "default", private_google_access=True)
    fake.service_accounts.add(RUNNER)
    yield fake
    fake.stop()


@pytest.fixture
def fake(api):
    api.faults = Faults()
    yield api
    api.faults = Faults()
    api.denied_permissions.clear()
    api.add_subnetwork("europe-west4", "default", private_google_access=True)
    for instance in list(api.instances.values()):  # a clean zone for the next test
        instance.deleting = True
        api._remove(instance)


def make_provider(api, **overrides) -> GceProvider:
    config = repo_config()
    config["profile"] = "test"
    config["profiles"]["test"].update(bucket="gs://mlbatch-unit", compute_endpoint=api.endpoint, **overrides)
    return GceProvider(load_settings(config, ROOT))


@pytest.fixture
def provider(api):
    return make_provider(api)


def request(name: str, attempt: int = 1, spot: bool = True, **job) -> InstanceRequest:
    spec = dataclasses.replace(SPEC, bucket="gs://mlbatch-unit", vm_image="mlbatch-v0-0-1-20260101000000")
    return InstanceRequest(
        name=name,
        spec=spec,
        job=Job(name="sleep", container="trainer", command=("sleep",), **job),
        attempt=attempt,
        labels={"managed-by": "mlbatch", "run-id": spec.run_id, "attempt": str(attempt)},
        max_run_seconds=960,
        spot=spot,
    )


# --- 2. errors by reason ----------------------------------------------------------------------


def test_a_rate_limit_403_is_retried_with_backoff(fake, provider):
    fake.faults.reply_errors = {"instances.insert": ["rateLimitExceeded", "rateLimitExceeded"]}
    before = fake.calls["instances.insert"]
    provider.create(request("mlb-rate-1"), ZONE_A)
    assert fake.calls["instances.insert"] - before == 3 and fake.find("mlb-rate-1") is not None


def test_a_synchronous_quota_403_is_quota_not_permission(fake, provider):
    fake.faults.reply_errors = {"instances.insert": ["quotaExceeded"]}
    with pytest.raises(MlbatchError) as info:
        provider.create(request("mlb-quota-1"), ZONE_A)
    assert info.value.exit_code == ExitCode.QUOTA_EXCEEDED and "Quota 'CPUS' exceeded" in str(info.value)


def test_unsupported_operation_sends_the_run_to_the_next_zone(fake, provider):
    fake.faults.unsupported_zones = {ZONE_A}
    with pytest.raises(CapacityError) as info:
        provider.create(request("mlb-unsup-1"), ZONE_A)
    assert "UNSUPPORTED_OPERATION" in str(info.value)
    provider.create(request("mlb-unsup-1"), ZONE_B)
    assert fake.find("mlb-unsup-1").zone == ZONE_B


def test_resource_not_ready_is_retried(fake, provider):
    fake.faults.reply_errors = {"instances.insert": ["resourceNotReady"]}
    provider.create(request("mlb-notready-1"), ZONE_A)
    assert fake.find("mlb-notready-1") is not None


@pytest.mark.parametrize("method", ["instances.get", "zoneOperations.list"])
def test_errors_of_state_and_preemption_checks_are_mapped(fake, provider, method):
    provider.create(request("mlb-checks-1"), ZONE_A)
    fake.faults.reply_errors = {method: ["forbidden"]}
    with pytest.raises(MlbatchError) as info:
        provider.state("mlb-checks-1") if method == "instances.get" else provider.was_preempted("mlb-checks-1")
    assert info.value.exit_code == ExitCode.PERMISSION_DENIED and f"compute.{method}" in str(info.value)


# --- 1. operation waits -----------------------------------------------------------------------


# A wait held longer than a client's default timeout: tests/integration/test_gce_operation_wait.py (70 s).


# --- 3. teardown races ------------------------------------------------------------------------


def _delete_elsewhere(fake, name: str) -> None:
    """The agent deleting its own VM: a bare DELETE, its operation left running."""
    url = f"{fake.endpoint}/compute/v1/projects/{PROJECT}/zones/{ZONE_A}/instances/{name}"
    urllib.request.urlopen(urllib.request.Request(url, method="DELETE"), timeout=10).close()


@pytest.mark.parametrize("in_operation", [False, True], ids=["resourceNotReady", "operation-404"])
def test_a_delete_that_meets_another_delete_means_gone(fake, provider, in_operation):
    provider.create(request("mlb-race-1"), ZONE_A)
    fake.faults.operation_seconds = 0.5  # the other delete is under way when ours comes (milliseconds later)
    fake.faults.delete_race_in_operation = in_operation
    # The other delete cannot be seen (its list refused): ours meets it, as when it starts after the look.
    fake.faults.reply_errors = {"zoneOperations.list": ["forbidden"]}
    _delete_elsewhere(fake, "mlb-race-1")
    provider.delete("mlb-race-1")
    assert fake.find("mlb-race-1") is None and provider.state("mlb-race-1") == GONE


def test_a_delete_under_way_is_waited_on_not_retried(fake, provider):
    """The agent deletes its VM once its records are written, so the controller's delete usually
    meets that one: it waits on its operation (zoneOperations.wait ends as it does), where deletes
    retried on resourceNotReady found the instance gone only at their next backoff."""
    provider.create(request("mlb-wait-1"), ZONE_A)
    fake.faults.operation_seconds = 0.5  # long enough for a retried delete to show: backoff starts at 10 ms here
    _delete_elsewhere(fake, "mlb-wait-1")
    deletes, waits = fake.calls["instances.delete"], fake.calls["zoneOperations.wait"]
    provider.delete("mlb-wait-1")
    assert fake.find("mlb-wait-1") is None and provider.state("mlb-wait-1") == GONE
    assert fake.calls["instances.delete"] - deletes == 1  # ours, once the other is done: 404, gone
    assert fake.calls["zoneOperations.wait"] - waits >= 1


# --- 4. preemption told from other stops ------------------------------------------------------


def test_preemption_is_asked_for_with_a_server_side_filter(fake, provider):
    fake.faults.page_size = 1
    provider.create(request("mlb-other-1"), ZONE_A)
    fake.faults.preempt_attempts = {2: 0.0}
    provider.create(request("mlb-spot-2", attempt=2), ZONE_A)
    wait = threading.Event()
    while fake.find("mlb-spot-2") is not None:
        wait.wait(0.1)
    asked = len(fake.queries)  # the fake is shared: earlier tests' deletes listed operations too
    assert provider.was_preempted("mlb-spot-2") and not provider.was_preempted("mlb-other-1")
    filters = [q.get("filter", "") for m, q in fake.queries[asked:] if m == "zoneOperations.list"]
    assert filters and all('operationType = "compute.instances.preempted"' in f and "/instances/" in f for f in filters)


# --- 6. preflight -----------------------------------------------------------------------------


def test_preflight_passes_when_permissions_and_network_are_there(fake, provider):
    provider.preflight()
    assert fake.calls["subnetworks.get"] >= 1 and fake.calls["iam:serviceAccounts.testIamPermissions"] >= 1


def test_preflight_names_every_missing_permission(fake, provider):
    fake.denied_permissions |= {"compute.instances.create", "iam.serviceAccounts.actAs"}
    with pytest.raises(MlbatchError) as info:
        provider.preflight()
    assert info.value.exit_code == ExitCode.PERMISSION_DENIED
    assert "compute.instances.create" in str(info.value) and f"iam.serviceAccounts.actAs on {RUNNER}" in str(info.value)


def test_preflight_needs_private_google_access_unless_cloud_nat(fake, api):
    fake.add_subnetwork("europe-west4", "default", private_google_access=False)
    with pytest.raises(MlbatchError) as info:
        make_provider(api).preflight()
    assert info.value.exit_code == ExitCode.BAD_INPUT and "no Private Google Access" in str(info.value)
    make_provider(api, cloud_nat=True).preflight()
    with pytest.raises(MlbatchError, match="subnetwork nosuch in europe-west4 does not exist"):
        make_provider(api, subnetwork="nosuch").preflight()
    with pytest.raises(MlbatchError, match="cloud_nat 'yes': expected true or false"):
        make_provider(api, cloud_nat="yes")


def test_preflight_asks_for_what_the_insert_and_the_preflight_itself_use(fake, provider):
    """instances.insert of our body needs compute.images.useReadOnly on the image, and the preflight
    reads the subnet (compute.subnetworks.get): both are named with the rest, in one message."""
    fake.denied_permissions |= {"compute.images.useReadOnly", "compute.subnetworks.get"}
    with pytest.raises(MlbatchError) as info:
        provider.preflight()
    assert info.value.exit_code == ExitCode.PERMISSION_DENIED
    assert "compute.images.useReadOnly" in str(info.value) and "compute.subnetworks.get" in str(info.value)


HOST = "mlbatch-host-net"


@pytest.fixture
def shared_vpc(fake):
    """A Shared VPC: the subnet lives in the host project, none of that name in ours."""
    fake.add_subnetwork("europe-west4", "shared-subnet", private_google_access=True, project=HOST, network="shared-net")
    yield
    fake.subnetworks.pop((HOST, "europe-west4", "shared-subnet"), None)
    fake.denied_on.clear()


def test_a_shared_vpc_subnet_is_the_host_projects(fake, api, shared_vpc):
    provider = make_provider(api, network_project=HOST, network="shared-net", subnetwork="shared-subnet")
    provider.preflight()
    provider.create(request("mlb-shared-1"), ZONE_A)
    interface = fake.find("mlb-shared-1").body["networkInterfaces"][0]
    assert interface["subnetwork"].endswith(f"projects/{HOST}/regions/europe-west4/subnetworks/shared-subnet")
    assert interface["network"].endswith(f"projects/{HOST}/global/networks/shared-net")


def test_the_preflight_asks_the_host_project_for_the_subnet(fake, api, shared_vpc):
    fake.denied_on[HOST] = {"compute.subnetworks.use"}
    with pytest.raises(MlbatchError) as info:
        make_provider(api, network_project=HOST, network="shared-net", subnetwork="shared-subnet").preflight()
    assert info.value.exit_code == ExitCode.PERMISSION_DENIED and f"compute.subnetworks.use on project {HOST}" in str(info.value)


def test_the_fake_refuses_a_subnet_that_is_not_where_the_insert_says(fake, provider, shared_vpc):
    link = f"projects/{PROJECT}/regions/europe-west4/subnetworks/shared-subnet"
    code, message = _insert(fake, provider, "mlb-nosubnet-1", **{"networkInterfaces": [{"subnetwork": link}]})
    assert code == 400 and "The referenced subnetwork resource cannot be found" in message


@pytest.mark.parametrize(
    ("spot", "gpu", "policy"), [(False, False, "MIGRATE"), (True, False, "TERMINATE"), (False, True, "TERMINATE")]
)
def test_host_maintenance_migrates_a_standard_vm_and_ends_only_spot_and_gpu_ones(fake, provider, spot, gpu, policy):
    """A standard VM set to TERMINATE is stopped by a host maintenance event (no preemption: the run
    would end as an unretried failure); MIGRATE keeps it running. Spot and GPU VMs cannot migrate."""
    job = {"machine_type": "n1-standard-4", "gpu_type": "nvidia-tesla-t4", "gpu_count": 1} if gpu else {}
    provider.create(request("mlb-maint-1", spot=spot, **job), ZONE_A)
    assert fake.host_maintenance("mlb-maint-1") == policy
    assert provider.state("mlb-maint-1") == (RUNNING if policy == "MIGRATE" else STOPPED)
    assert not provider.was_preempted("mlb-maint-1")


def test_the_end_of_the_max_run_duration_is_not_a_preemption(fake, provider):
    provider.create(request("mlb-maxrun-1", spot=False), ZONE_A)
    instance = fake.find("mlb-maxrun-1")
    fake.advance(960)
    while fake.find("mlb-maxrun-1") is not None:
        threading.Event().wait(0.1)
    assert not instance.preempted and not provider.was_preempted("mlb-maxrun-1")


# --- 7. the fake's strictness -----------------------------------------------------------------


def _get(fake, path: str) -> dict:
    with urllib.request.urlopen(f"{fake.endpoint}/compute/v1/projects/{PROJECT}/zones/{ZONE_A}/{path}", timeout=10) as r:
        return json.loads(r.read())


def test_lists_are_paged_and_the_provider_reads_every_page(fake, provider):
    fake.faults.page_size = 2
    for i in range(5):
        provider.create(request(f"mlb-page-{i}"), ZONE_A)
    first = _get(fake, "instances")
    assert len(first["items"]) == 2 and first["nextPageToken"]
    assert sorted(i.name for i in provider.list_ours() if i.name.startswith("mlb-page-")) == [f"mlb-page-{i}" for i in range(5)]


@pytest.mark.parametrize("expression", ["status:RUNNING", "name eq .*x", '(status = "RUNNING") OR (name = "x")', "labels.job ="])
def test_filters_the_fake_does_not_understand_are_a_400(fake, expression):
    with pytest.raises(urllib.error.HTTPError) as info:
        _get(fake, "instances?filter=" + urllib.parse.quote(expression))
    assert info.value.code == 400 and "Invalid list filter expression" in json.loads(info.value.read())["error"]["message"]


def test_operation_lists_honour_filters(fake, provider):
    provider.create(request("mlb-ops-1"), ZONE_A)
    ops = _get(fake, "operations?filter=" + urllib.parse.quote('(operationType = "insert") (targetLink != "x")'))["items"]
    assert ops and all(op["operationType"] == "insert" for op in ops)
    link = f"https://www.googleapis.com/compute/v1/projects/{PROJECT}/zones/{ZONE_A}/instances/mlb-ops-1"
    preempted = f'(operationType = "compute.instances.preempted") (targetLink = "{link}")'
    assert _get(fake, "operations?filter=" + urllib.parse.quote(preempted))["items"] == []


def test_instances_go_provisioning_staging_running(fake, provider):
    fake.faults.operation_seconds = 0.5  # each state shows for half a second; it is looked at every 20 ms
    seen = []
    thread = threading.Thread(target=provider.create, args=(request("mlb-states-1"),), kwargs={"zone": ZONE_A})
    thread.start()
    while thread.is_alive():
        instance = fake.find("mlb-states-1")
        if instance is not None and (not seen or seen[-1] != instance.status):
            seen.append(instance.status)
        threading.Event().wait(0.02)
    thread.join()
    assert seen[0] == "PROVISIONING" and "STAGING" in seen and provider.state("mlb-states-1") == RUNNING


def _insert(fake, provider, name: str, image: str = "", **changes) -> tuple[int, str]:
    """POST an instance body as the provider builds it, with `changes` (dotted paths) applied."""
    body = json.loads(compute_v1.Instance.to_json(provider.instance_body(request(name), ZONE_A), use_integers_for_enums=False))
    for path, value in changes.items():
        where = body
        *parents, leaf = path.split(".")
        for key in parents:
            where = where.setdefault(key, {})
        where[leaf] = value
    if image:
        body["disks"][0]["initializeParams"]["sourceImage"] = image
    req = urllib.request.Request(
        f"{fake.endpoint}/compute/v1/projects/{PROJECT}/zones/{ZONE_A}/instances",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, ""
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())["error"]["message"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"scheduling.automaticRestart": True}, "do not support automatic restart"),
        ({"scheduling.onHostMaintenance": "MIGRATE"}, "cannot live-migrate"),
        (
            {
                "guestAccelerators": [
                    {"acceleratorType": f"zones/{ZONE_A}/acceleratorTypes/nvidia-tesla-t4", "acceleratorCount": 1}
                ]
            },
            "[e2-standard-4, nvidia-tesla-t4] features are not compatible",
        ),
        (
            {
                "machineType": f"zones/{ZONE_A}/machineTypes/n1-standard-4",
                "scheduling.provisioningModel": "STANDARD",
                "scheduling.onHostMaintenance": "MIGRATE",
                "guestAccelerators": [
                    {"acceleratorType": f"zones/{ZONE_A}/acceleratorTypes/nvidia-tesla-t4", "acceleratorCount": 1}
                ],
            },
            "guest accelerators do not support live migration",
        ),
    ],
)
def test_the_fake_enforces_cross_field_rules(fake, provider, changes, message):
    code, text = _insert(fake, provider, "mlb-rules-1", **changes)
    assert code == 400 and message in text
    assert fake.find("mlb-rules-1") is None


def test_secure_boot_needs_a_uefi_image(fake, provider):
    fake.add_image("legacy-bios-image", "unused:latest", family="legacy", uefi=False)
    code, message = _insert(fake, provider, "mlb-bios-1", image=f"projects/{PROJECT}/global/images/legacy-bios-image")
    assert code == 400 and "UEFI-compatible" in message


def test_image_family_references_resolve_to_the_newest_image(fake, provider):
    assert _insert(fake, provider, "mlb-family-1", image=f"projects/{PROJECT}/global/images/family/mlbatch") == (200, "")
    assert fake.find("mlb-family-1").body["disks"][0]["initializeParams"]["sourceImage"].endswith("family/mlbatch")
    code, message = _insert(fake, provider, "mlb-family-2", image=f"projects/{PROJECT}/global/images/family/nosuch")
    assert code == 404 and "family/nosuch" in message
