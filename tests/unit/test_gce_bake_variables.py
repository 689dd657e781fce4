"""The googlecompute bake's Packer variables: every one the code passes is declared and they
carry the settings (`packer validate` accepting them, a subprocess with Ansible's start-up each
time: tests/integration/test_packer_validate.py)."""

import re
from pathlib import Path

from mlbatch.core.manifest import Container
from mlbatch.core.settings import load_settings
from mlbatch.release.bake import BakeRequest
from mlbatch.release.gce_image import SourceImage, packer_variables
from tests.conftest import ROOT, repo_config

DIGEST = "sha256:" + "1" * 64


def settings(**overrides):
    config = repo_config()
    config["profile"] = "test"
    config["profiles"]["test"].update(bucket="gs://unused-bucket", **overrides)
    return load_settings(config, ROOT, env={})


def request() -> BakeRequest:
    return BakeRequest("v1.2.3", "abc123", "mlbatch-v1-2-3-20260101000000", "mlbatch", "debian:bookworm-slim", None)


def variables(**overrides) -> dict[str, str]:
    containers = {"trainer": Container("trainer", "127.0.0.1:5000/trainer", DIGEST)}
    shared = request().variables(Path("/tmp/mlbatch.whl"), "e" * 64, "f" * 64, Path("/tmp/packer-manifest.json"))
    source = SourceImage("debian-12-bookworm-v20261111", f"{LINK}/debian-12-bookworm-v20261111", uefi=True)
    return {**shared, **packer_variables(settings(**overrides), request(), containers, source)}


LINK = "https://www.googleapis.com/compute/v1/projects/debian-cloud/global/images"


def test_every_variable_passed_is_declared_in_the_template():
    declared = set(re.findall(r'^variable "([a-z0-9_]+)"', (ROOT / "packer" / "mlbatch.pkr.hcl").read_text(), re.M))
    assert set(variables()) <= declared, set(variables()) - declared


def test_the_settings_reach_the_build_vm_without_an_external_ip():
    values = variables(bake_zone="europe-west4-b", subnetwork="mlbatch-subnet", ssh_port=2222)
    assert values["zone"] == "europe-west4-b"
    assert values["source_image_project"] == "debian-cloud" and values["source_image_family"] == "debian-12"
    assert values["subnetwork"] == "projects/mlbatch-test/regions/europe-west4/subnetworks/mlbatch-subnet"
    assert values["network"] == "projects/mlbatch-test/global/networks/default" and values["ssh_port"] == "2222"
    assert values["use_iap"] == "false" and values["use_os_login"] == "false"
    assert values["service_account_email"] == "mlbatch-runner@mlbatch-test.iam.gserviceaccount.com"
    assert values["prepull_images"] == f'["127.0.0.1:5000/trainer@{DIGEST}"]'
    # The bake starts from exactly the image the input hash names, as a Shielded VM (debian-12 is UEFI).
    assert values["source_image"] == "debian-12-bookworm-v20261111" and values["shielded_vm"] == "true"
    assert values["agent_wheel_sha256"] == "e" * 64


def test_the_build_vm_is_shielded_keeps_project_keys_out_and_has_a_read_only_scope():
    """The template's googlecompute source (issue 16, item 7); option names as the googlecompute builder
    reads them (Packer 1.6.6's, and packer-plugin-googlecompute's builder/googlecompute/config.go)."""
    hcl = (ROOT / "packer" / "mlbatch.pkr.hcl").read_text()
    source = hcl.split('source "googlecompute" "vm" {', 1)[1].split("\n}\n", 1)[0]
    assert re.search(r'block-project-ssh-keys\s*=\s*"true"', source)
    for option in ("enable_secure_boot", "enable_vtpm", "enable_integrity_monitoring"):
        assert re.search(rf"^\s*{option}\s*=\s*var\.shielded_vm$", source, re.M), option
    assert re.search(r'^\s*scopes\s*=\s*\["https://www.googleapis.com/auth/devstorage.read_only"\]$', source, re.M)


def test_a_shared_vpc_bake_vm_joins_the_host_projects_subnet():
    """Packer takes a network or subnetwork with a "/" as is (packer-plugin-googlecompute GetNetworking)."""
    values = variables(network_project="mlbatch-host-net", network="shared-net", subnetwork="shared-subnet")
    assert values["network"] == "projects/mlbatch-host-net/global/networks/shared-net"
    assert values["subnetwork"] == "projects/mlbatch-host-net/regions/europe-west4/subnetworks/shared-subnet"


def test_the_template_takes_no_secret():
    """Whatever the template passes Ansible lands on its command line, which every user of the machine
    reads in `ps` and Packer's plugin prints unmasked (hashicorp/packer#11078): the pre-pull logs in
    with the bake VM's own token instead (ansible/roles/prepull), so no variable holds a secret."""
    template = (ROOT / "packer" / "mlbatch.pkr.hcl").read_text()
    declared = re.findall(r'^variable "([a-z_]+)"', template, re.M)
    assert [name for name in declared if re.search("token|password|secret|credential", name)] == []
    assert not re.search(r"^\s*sensitive\s*=", template, re.M)
    assert not [name for name in variables() if re.search("token|password|secret", name)]
