"""Paths inside the VM image that the Python side must know: where the agent is installed
and where the extra CA bundle lands. Packer's template (the local image's entry point) and
the Ansible roles' defaults (`agent_venv`, `base_ca_bundle_path`) write them too, in their
own languages; tests/unit/test_one_place.py holds them to these."""

AGENT_VENV = "/opt/mlbatch/venv"  # the agent role's venv
AGENT = f"{AGENT_VENV}/bin/mlbatch-agent"  # the console script: systemd's ExecStart, Batch's runnable, Docker's entry point
CA_BUNDLE = "/usr/local/share/mlbatch/ca-bundle.crt"  # the base role's (and the local base image's) extra CA bundle
