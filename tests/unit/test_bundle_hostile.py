"""The code bundle ships regular files inside batch_code/ and nothing else (issue 9)."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from mlbatch.core.bundle import build_bundle
from mlbatch.core.errors import BadInput, ExitCode


def _names(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        out = {}
        for member in tar.getmembers():
            assert member.isfile(), f"{member.name} is not stored as a regular file"
            source = tar.extractfile(member)
            assert source is not None
            out[member.name] = source.read()
        return out


@pytest.fixture
def code(tmp_path) -> Path:
    root = tmp_path / "project" / "batch_code"
    root.mkdir(parents=True)
    (root / "train.py").write_text("print('train')\n")
    (root / "lib").mkdir()
    (root / "lib" / "util.py").write_text("X = 1\n")
    return root


def test_a_symlink_to_a_file_outside_refuses_the_bundle_naming_it(code, tmp_path):
    secret = tmp_path / "secret.json"
    secret.write_text('{"private_key": "do-not-publish"}')
    (code / "creds.json").symlink_to(secret)
    with pytest.raises(BadInput, match=r"batch_code/creds\.json.*outside") as info:
        build_bundle(code)
    assert info.value.exit_code == ExitCode.BAD_INPUT


def test_a_linked_directory_leading_outside_is_refused(code, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "id_rsa").write_text("KEY")
    (code / "data").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(BadInput, match=r"batch_code/data"):
        build_bundle(code)


def test_a_dangling_link_and_a_fifo_are_refused(code):
    (code / "gone.py").symlink_to(code / "nowhere.py")
    with pytest.raises(BadInput, match="gone.py"):
        build_bundle(code)
    (code / "gone.py").unlink()
    os.mkfifo(code / "pipe")
    with pytest.raises(BadInput, match="pipe.*not a regular file"):
        build_bundle(code)


def test_a_symlink_inside_is_stored_as_the_file_it_names(code):
    (code / "alias.py").symlink_to("lib/util.py")
    files = _names(build_bundle(code).data)
    assert files["alias.py"] == b"X = 1\n" == files["lib/util.py"]


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=root, check=True, capture_output=True)


def test_in_a_git_checkout_only_tracked_files_ship_and_the_tree_state_is_recorded(code):
    project = code.parent
    _git(project, "init", "-q")
    _git(project, "add", ".")
    _git(project, "commit", "-qm", "code")
    clean = build_bundle(code)
    assert clean.clean and "clean" in clean.tree_state
    (code / ".env").write_text("API_TOKEN=hunter2\n")
    (code / "train.py").write_text("print('edited')\n")
    dirty = build_bundle(code)
    files = _names(dirty.data)
    assert sorted(files) == ["lib/util.py", "train.py"], "an untracked .env must never ship"
    assert files["train.py"] == b"print('edited')\n"
    assert not dirty.clean
    assert ".env" in dirty.tree_state and "untracked" in dirty.tree_state and "train.py" in dirty.tree_state


def test_outside_a_git_checkout_the_bundle_says_so(code):
    made = build_bundle(code)
    assert not made.clean and "not a git checkout" in made.tree_state


def test_the_release_refuses_a_link_leaving_batch_code_before_any_side_effect(tmp_path):
    import shutil

    from mlbatch.core.settings import load_settings
    from mlbatch.release.flow import check_release
    from tests.conftest import ROOT, repo_config

    project = tmp_path / "project"
    shutil.copytree(ROOT / "batch_code", project / "batch_code")
    shutil.copytree(ROOT / "containers", project / "containers")
    (tmp_path / "ci-secret.json").write_text('{"private_key": "x"}')
    (project / "batch_code" / "service-account.json").symlink_to(tmp_path / "ci-secret.json")
    config = repo_config()
    config["profiles"]["local"]["bucket"] = f"file://{tmp_path / 'bucket'}"
    settings = load_settings(config, project)
    with pytest.raises(BadInput, match=r"batch_code/service-account\.json.*outside") as info:
        check_release(settings, "v1.2.3")
    assert info.value.exit_code == ExitCode.BAD_INPUT
    assert not (tmp_path / "bucket").exists() or not any((tmp_path / "bucket").rglob("*"))
