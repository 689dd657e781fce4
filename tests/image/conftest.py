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
    parser.addoption("--mlbatch-gpu-image", action="store_true", default=False, help="the GPU image: check its NVIDIA driver too")


@pytest.fixture
def expected_version(request):
    return request.config.getoption("--mlbatch-version")


@pytest.fixture
def prepulled(request):
    return request.config.getoption("--mlbatch-prepulled")


@pytest.fixture
def agent_wheel_sha256(request):
    return request.config.getoption("--mlbatch-agent-wheel-sha256")


@pytest.fixture
def gpu_image(request):
    """The GPU image's checks run only on it (test_gpu_image.py); the plain image has no driver."""
    if not request.config.getoption("--mlbatch-gpu-image"):
        pytest.skip("not the GPU image (--mlbatch-gpu-image)")


@pytest.fixture
def working_gpu(host, gpu_image):
    """Checks marked `gpu` need a GPU the driver drives: they run only where nvidia-smi works."""
    result = host.run("nvidia-smi -L")
    if result.rc != 0:
        pytest.skip(f"no working GPU here (nvidia-smi exit {result.rc}: {(result.stdout + result.stderr).strip()[:200]})")
    return result.stdout
