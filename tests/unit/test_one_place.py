"""Facts that other languages repeat (Packer's HCL, the Ansible roles' defaults) agree with
the one Python module that names them (mlbatch.core.labels, mlbatch.core.image_paths)."""

from __future__ import annotations

import re

import yaml

from mlbatch.core import image_paths, labels
from tests.conftest import ROOT

HCL = (ROOT / "packer" / "mlbatch.pkr.hcl").read_text()


def role_defaults(role: str) -> dict:
    return yaml.safe_load((ROOT / "ansible" / "roles" / role / "defaults" / "main.yml").read_text())


def test_the_local_images_labels_are_the_ones_the_release_reads():
    written = re.findall(r'"LABEL (org\.mlbatch\.[a-z0-9-]+)=', HCL)
    assert sorted(written) == sorted(labels.IMAGE_LABELS)


def test_the_agent_is_where_the_entry_point_systemd_and_batch_start_it():
    assert f'"ENTRYPOINT [\\"{image_paths.AGENT}\\"]"' in HCL
    assert role_defaults("agent")["agent_venv"] == image_paths.AGENT_VENV
    unit = (ROOT / "ansible" / "roles" / "agent" / "templates" / "mlbatch-agent.service.j2").read_text()
    assert "ExecStart={{ agent_venv }}/bin/mlbatch-agent" in unit
    assert image_paths.AGENT == f"{image_paths.AGENT_VENV}/bin/mlbatch-agent"


def test_the_ca_bundle_lands_where_the_local_base_image_puts_it():
    assert role_defaults("base")["base_ca_bundle_path"] == image_paths.CA_BUNDLE


def test_no_product_module_spells_an_org_mlbatch_label_but_labels_py():
    spelled = [
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "mlbatch").rglob("*.py")
        if "org.mlbatch." in p.read_text() and p.name != "labels.py"
    ]
    assert spelled == []
