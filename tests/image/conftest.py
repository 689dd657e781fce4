"""testinfra checks of a baked mlbatch image.

Hosts come from `--hosts`: docker://CONTAINER for the local bake (mlbatch starts one),
ssh://HOST for a GCE build VM. Checks marked `vm` hold only on a real VM.
"""

import pytest


def pytest_addoption(parser):
    parser.addoption("--mlbatch-version", default=None, help="release version the image must carry")


@pytest.fixture
def expected_version(request):
    return request.config.getoption("--mlbatch-version")
