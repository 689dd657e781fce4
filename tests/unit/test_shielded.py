"""Shielded VMs (issue 16, item 7): run VMs ask for them (tests/unit/test_gce_body.py), the bake VM
too (tests/unit/test_gce_bake_variables.py); Cloud Batch's instance policy cannot: this test says so,
and fails the day the API grows the field."""

from tests.support.discovery import document


def test_batch_instance_policy_has_no_shielded_vm_field():
    """batch.v1's InstancePolicy (revision 20261103: accelerators, bootDisk, disks, machineType,
    minCpuPlatform, provisioningModel, reservation) cannot ask for Secure Boot; Batch's documented way is
    an instance template (InstancePolicyOrTemplate.instanceTemplate, "Define job resources using a VM
    instance template"), which mlbatch does not create yet. Compute Engine still gives the task VMs
    vTPM and integrity monitoring, on by default for a UEFI image (compute_v1 ShieldedInstanceConfig:
    "Enabled by default"; Secure Boot "Disabled by default"), which the baked debian-12 image is.
    When this fails, Batch has the field: set it in BatchJobs.job_body."""
    schemas = document("batch.v1")["schemas"]
    fields = set(schemas["InstancePolicy"]["properties"]) | set(schemas["InstancePolicyOrTemplate"]["properties"])
    assert not {f for f in fields if "hield" in f or "ecureBoot" in f}, fields
    assert "instanceTemplate" in schemas["InstancePolicyOrTemplate"]["properties"]
