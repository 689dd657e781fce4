"""How the image test names the checks that failed, from pytest's short summary."""

from mlbatch.release.imagetest import failed_checks

SUMMARY = """\
..F.E
=========================== short test summary info ============================
FAILED tests/image/test_image.py::test_docker_engine_on_vm[ssh://127.0.0.1] - AssertionError
ERROR tests/image/test_image.py::test_prepulled_containers_on_vm[ssh://127.0.0.1] - RuntimeError
PASSED tests/image/test_image.py::test_agent_unit_enabled_on_vm[ssh://127.0.0.1]
1 failed, 3 passed, 1 error in 9.10s
"""


def test_failed_checks_names_failures_and_errors_only():
    assert failed_checks(SUMMARY) == [
        "test_docker_engine_on_vm[ssh://127.0.0.1]",
        "test_prepulled_containers_on_vm[ssh://127.0.0.1]",
    ]


def test_failed_checks_of_a_clean_run_is_empty():
    assert failed_checks("....\n4 passed in 3.00s\n") == []
