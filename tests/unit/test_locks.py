"""The hashed requirement locks (issue 16, item 8): each covers its source, every entry is
pinned exactly and hashed, and the installs use them with --require-hashes and nothing else."""

import tomllib

import pytest
from packaging.requirements import Requirement

from mlbatch.local import base_images
from mlbatch.release import locks
from tests.conftest import ROOT, repo_config


def _lock(path: str) -> dict[str, tuple[str, list[str]]]:
    return locks.read_lock((ROOT / path).read_text())


def _covered(requirements: list[str], lock: dict[str, tuple[str, list[str]]]) -> list[str]:
    """The requirements the lock misses, or pins at a version they do not allow."""
    missing = []
    for text in requirements:
        requirement = Requirement(text)
        pinned = lock.get(locks.normalise(requirement.name))
        if pinned is None or not requirement.specifier.contains(pinned[0], prereleases=True):
            missing.append(f"{text} (lock: {pinned[0] if pinned else 'absent'})")
    return missing


def test_the_agent_lock_covers_the_dependencies_of_pyproject():
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lock = _lock(locks.AGENT_LOCK)
    assert not _covered(dependencies, lock), "run `invoke deps.lock`"
    assert "mlbatch" not in lock  # the wheel itself is installed by its own hash (the agent role)


@pytest.mark.parametrize("lock", locks.locks(ROOT)[1:], ids=lambda lock: lock.source)
def test_each_container_lock_covers_its_requirements_in(lock):
    wanted = [line.split("#")[0].strip() for line in (ROOT / lock.source).read_text().splitlines()]
    assert not _covered([w for w in wanted if w], _lock(lock.output)), "run `invoke deps.lock`"


@pytest.mark.parametrize("lock", locks.locks(ROOT), ids=lambda lock: lock.output)
def test_every_entry_is_pinned_exactly_and_hashed(lock):
    entries = _lock(lock.output)
    assert entries
    unhashed = [name for name, (_, hashes) in entries.items() if not hashes]
    assert not unhashed, f"{lock.output}: no --hash for {unhashed}"
    options = [line for line in (ROOT / lock.output).read_text().splitlines() if line.startswith("--")]
    assert not options, f"{lock.output}: {options}: an index or find-links of one machine in the lock"


def test_every_container_and_the_image_install_from_their_lock_with_hashes_only():
    for dockerfile in (ROOT / "containers").glob("*/Dockerfile"):
        text = dockerfile.read_text()
        assert "--require-hashes" in text and "--no-deps" in text and "--only-binary=:all:" in text, dockerfile
        assert (dockerfile.parent / "requirements.in").is_file(), f"{dockerfile.parent}: no requirements.in to lock from"
    agent = (ROOT / "ansible/roles/agent/tasks/main.yml").read_text()
    assert "--require-hashes --no-deps --only-binary=:all:" in agent
    assert '/bin/pip", check]' in agent  # pip check: the lock held every dependency


def test_the_lock_task_passes_pip_compile_the_index_alone(tmp_path):
    argv = locks.compile_argv(locks.Lock("pyproject.toml", "out.txt", "x"), "https://pypi.org/simple", upgrade=False)
    assert argv[0].endswith("pip-compile")
    assert {"--generate-hashes", "--no-emit-index-url", "--no-emit-find-links"} <= set(argv)
    assert argv[-3:] == ["--output-file", "out.txt", "pyproject.toml"]


def test_every_base_image_a_profile_names_is_pinned_by_digest():
    pins = base_images.load(ROOT / base_images.LOCK)
    for profile, block in repo_config()["profiles"].items():
        assert block["base_image"] in pins, f"profile {profile}: {block['base_image']} has no digest in {base_images.LOCK}"
    for pin in pins.values():
        assert pin.ref.endswith(f"@{pin.digest}") and "@" not in pin.tag
