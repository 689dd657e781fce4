"""`packer validate` on the googlecompute bake's variables as the code passes them: every
combination the settings allow is accepted and an unpinned container refused (a typo would
otherwise surface only in a real bake). Each run starts Packer and, through its Ansible
provisioner, ansible-playbook twice (~1 s of CPU): here, not in the unit suite, which checks the
variables themselves (tests/unit/test_gce_bake_variables.py). Needs packer and the dev extra, no Docker."""

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.unit.test_gce_bake_variables import variables


def validate(values: dict[str, str]) -> subprocess.CompletedProcess:
    return _validate(tuple(values.items()))


@functools.cache  # the same values validate alike: each set is run once (a run costs ~1 s of CPU: two ansible-playbook --version)
def _validate(values: tuple[tuple[str, str], ...]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    argv = ["packer", "validate"]
    for key, value in values:
        argv += ["-var", f"{key}={value}"]
    return subprocess.run([*argv, str(ROOT / "packer" / "mlbatch.pkr.hcl")], capture_output=True, text=True, env=env)


# Every combination the settings accept (internal_ip and use_iap both false is refused before Packer).
ALLOWED = [
    {"internal_ip": internal_ip, "use_iap": use_iap, "os_login": os_login}
    for internal_ip, use_iap in ((True, False), (False, True), (True, True))
    for os_login in (False, True)
]


@pytest.mark.parametrize("combination", ALLOWED, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_packer_validate_accepts_every_combination_the_settings_allow(combination):
    """The build VM never has an external IP (omit_external_ip), and googlecompute then
    requires use_internal_ip: use_iap with internal_ip false made the template invalid."""
    result = validate(variables(**combination))
    assert result.returncode == 0, (combination, result.stdout + result.stderr)
    assert variables(**combination)["use_os_login"] == str(combination["os_login"]).lower()


def test_packer_validate_accepts_the_values_and_refuses_an_unpinned_container():
    ok = validate(variables())
    assert ok.returncode == 0, ok.stdout + ok.stderr
    refused = validate({**variables(), "prepull_images": '["127.0.0.1:5000/trainer:latest"]'})
    assert refused.returncode != 0 and "pinned by digest" in refused.stdout + refused.stderr
