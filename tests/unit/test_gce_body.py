"""GceProvider.instance_body: the insert request's policy, without a network."""

from __future__ import annotations

import json

from google.cloud import compute_v1  # the gce extra, part of dev: CI must have it

from mlbatch.core import runs
from mlbatch.core.catalog import parse_catalog
from mlbatch.core.names import LABEL_KEY, LABEL_VALUE, managed_labels
from mlbatch.core.settings import load_settings
from mlbatch.providers.base import InstanceRequest
from mlbatch.providers.gce import GceProvider
from tests.conftest import ROOT, repo_config
from tests.unit.test_records import SPEC

ZONE = "europe-west4-b"
CATALOG = """
jobs:
  train:
    container: trainer
    command: [python, train.py]
    machine_type: n1-standard-8
    spot: true
    gpu: {type: nvidia-tesla-t4, count: 2}
  cpu:
    container: trainer
    command: [python, train.py]
"""


def provider(**overrides) -> GceProvider:
    config = repo_config()
    config["profile"] = "test"
    config["profiles"]["test"].update(bucket="gs://mlbatch-test-bucket", compute_endpoint="http://127.0.0.1:9", **overrides)
    return GceProvider(load_settings(config, ROOT, env={}))


def request(job="train", spot=True, attempt=1) -> InstanceRequest:
    return InstanceRequest(
        name=f"mlb-{SPEC.run_id}-{attempt}",
        spec=SPEC,
        job=parse_catalog(CATALOG)[job],
        attempt=attempt,
        labels={**managed_labels(), "role": "instance", "run-id": SPEC.run_id, "attempt": str(attempt), "expiry": "1"},
        max_run_seconds=SPEC.timeout_seconds + 900,
        spot=spot,
    )


def body(p: GceProvider, r: InstanceRequest) -> dict:
    return json.loads(compute_v1.Instance.to_json(p.instance_body(r, ZONE)))


def test_the_body_carries_the_run_spec_and_nothing_secret():
    b = body(provider(), request(attempt=2))
    metadata = {i["key"]: i["value"] for i in b["metadata"]["items"]}
    assert runs.RunSpec.from_json(metadata["mlbatch-run-spec"]) == SPEC
    assert metadata["mlbatch-attempt"] == "2"
    assert (metadata["mlbatch-run-id"], metadata["mlbatch-bucket"]) == (SPEC.run_id, SPEC.bucket)
    assert metadata["mlbatch-compute-endpoint"] == "http://127.0.0.1:9"
    assert metadata["block-project-ssh-keys"] == "true" and metadata["enable-oslogin"] == "TRUE"
    blob = json.dumps(b).lower()
    for secret in ("password", "private_key", "begin rsa", "begin private", "access_token", "secret"):
        assert secret not in blob


def test_the_body_policy():
    p = provider()
    b = body(p, request())
    assert b["name"] == f"mlb-{SPEC.run_id}-1"
    assert b["machineType"] == f"zones/{ZONE}/machineTypes/n1-standard-8"
    assert b["labels"]["managed-by"] == "mlbatch"
    assert all(LABEL_KEY.fullmatch(k) and LABEL_VALUE.fullmatch(v) for k, v in b["labels"].items())
    (iface,) = b["networkInterfaces"]
    assert not iface.get("accessConfigs") and iface["network"] == "projects/mlbatch-test/global/networks/default"
    assert not iface.get("subnetwork")
    # A GPU job: its image's driver is unsigned (Debian's DKMS module), so Secure Boot is off for it alone.
    assert b["shieldedInstanceConfig"] == {"enableSecureBoot": False, "enableVtpm": True, "enableIntegrityMonitoring": True}
    assert b["serviceAccounts"] == [
        {"email": p.settings.service_account, "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}
    ]
    (disk,) = b["disks"]
    assert disk["boot"] and disk["autoDelete"]
    assert disk["initializeParams"]["sourceImage"] == f"projects/mlbatch-test/global/images/{SPEC.vm_image}"
    assert disk["initializeParams"]["diskType"] == f"zones/{ZONE}/diskTypes/pd-balanced"
    scheduling = b["scheduling"]
    assert scheduling["provisioningModel"] == "SPOT" and scheduling["instanceTerminationAction"] == "DELETE"
    assert scheduling["maxRunDuration"] == {"seconds": str(SPEC.timeout_seconds + 900)}
    assert scheduling["automaticRestart"] is False and scheduling["onHostMaintenance"] == "TERMINATE"
    assert b["guestAccelerators"] == [
        {"acceleratorType": f"zones/{ZONE}/acceleratorTypes/nvidia-tesla-t4", "acceleratorCount": 2}
    ]


def test_on_demand_and_no_gpu():
    b = body(provider(), request(job="cpu", spot=False))
    assert b["scheduling"]["provisioningModel"] == "STANDARD"
    assert not b.get("guestAccelerators")
    assert b["shieldedInstanceConfig"] == {"enableSecureBoot": True, "enableVtpm": True, "enableIntegrityMonitoring": True}


def test_a_subnetwork_and_an_image_self_link():
    p = provider(subnetwork="ml-subnet")
    r = request()
    link = "projects/other/global/images/mlbatch-v1-0-0-20261125"
    r = InstanceRequest(**{**r.__dict__, "spec": runs.RunSpec(**{**SPEC.__dict__, "vm_image": link})})
    b = body(p, r)
    assert b["networkInterfaces"][0]["subnetwork"] == "projects/mlbatch-test/regions/europe-west4/subnetworks/ml-subnet"
    assert b["disks"][0]["initializeParams"]["sourceImage"] == link
