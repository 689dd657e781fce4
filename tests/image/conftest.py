"""testinfra checks of a baked mlbatch image.

Hosts come from `--hosts` (testinfra parametrises every test by host): docker://CONTAINER
for the local bake (mlbatch starts one), ssh://USER@HOST:PORT for a VM booted from the
image. Checks marked `vm` hold only on a VM (systemd units, the image's own engine,
pre-pulled containers); `-m "not vm"` leaves them out for the container image.
"""

import pytest


def pytest_addoption(parser):
    parser.addoption("--mlbatch-version", default=None, help="release version the image must carry")
    parser.addoption(
        "--mlbatch-agent-wheel-sha256",
        default=None,
        help="sha256 of the agent wheel the release's manifest names (the image must have installed exactly it)",
    )
    parser.addoption(
        "--mlbatch-prepulled",
        action="append",
        default=[],
        help="REPOSITORY@sha256:DIGEST that the image's engine must hold (repeat the option per image)",
    )


@pytest.fixture
def expected_version(request):
    return request.config.getoption("--mlbatch-version")


@pytest.fixture
def prepulled(request):
    return request.config.getoption("--mlbatch-prepulled")


@pytest.fixture
def agent_wheel_sha256(request):
    return request.config.getoption("--mlbatch-agent-wheel-sha256")
