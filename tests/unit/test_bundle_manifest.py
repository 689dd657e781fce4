import dataclasses
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from mlbatch.core import manifest as manifests
from mlbatch.core.bucket import FileBucket
from mlbatch.core.bundle import build_bundle, extract_bundle, sha256
from mlbatch.core.catalog import parse_catalog
from mlbatch.core.errors import AlreadyExists, NotFound
from mlbatch.core.manifest import CodeBundle, Container, Manifest, VmImage
from tests.conftest import ROOT


def _tree(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "a.py").write_text("print('a')\n")
    (root / "pkg" / "b.txt").write_text("b\n")
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o755)
    return root


def test_bundle_is_deterministic(tmp_path):
    one, two = _tree(tmp_path / "one"), _tree(tmp_path / "two")
    os.utime(two / "a.py", (1, 1))  # other mtimes, other creation order
    (two / "__pycache__").mkdir()
    (two / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"junk")
    assert sha256(build_bundle(one).data) == sha256(build_bundle(two).data)


def test_bundle_changes_with_content(tmp_path):
    root = _tree(tmp_path / "one")
    before = sha256(build_bundle(root).data)
    (root / "a.py").write_text("print('changed')\n")
    assert sha256(build_bundle(root).data) != before


def test_bundle_round_trip_keeps_modes(tmp_path):
    data = build_bundle(_tree(tmp_path / "src")).data
    extract_bundle(data, tmp_path / "out")
    assert (tmp_path / "out" / "pkg" / "b.txt").read_text() == "b\n"
    assert os.access(tmp_path / "out" / "run.sh", os.X_OK)


@pytest.mark.parametrize("name", ["../evil", "/etc/evil"])
def test_extract_refuses_paths_outside(tmp_path, name):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(ValueError, match="refusing bundle member"):
        extract_bundle(raw.getvalue(), tmp_path / "out")


def _manifest(version="v1.0.0") -> Manifest:
    return Manifest(
        version=version,
        git_sha="abc",
        created="2026-11-23T00:00:00+00:00",
        profile="local",
        vm_image=VmImage("mlbatch-v1-0-0-1", "mlbatch-vm-image:mlbatch-v1-0-0-1", "h", version),
        containers={"trainer": Container("trainer", "127.0.0.1:5000/trainer", "sha256:" + "0" * 64)},
        code=CodeBundle("file:///b/batch_code/v1.0.0/batch_code.tar.gz", "f" * 64, 10),
        jobs=parse_catalog((ROOT / "batch_code" / "jobs.yaml").read_text()),
    )


def test_manifest_round_trips_and_is_immutable(tmp_path):
    bucket = FileBucket(tmp_path)
    manifests.publish(bucket, _manifest())
    assert manifests.load(bucket, "v1.0.0") == _manifest()
    with pytest.raises(AlreadyExists):
        manifests.publish(bucket, _manifest())
    manifests.publish(bucket, _manifest("v1.0.0-rc.1"))
    assert manifests.list_versions(bucket) == ["v1.0.0-rc.1", "v1.0.0"]


def test_a_manifest_keeps_what_its_images_agent_does_and_an_older_one_reads_as_doing_nothing_more():
    image = VmImage("mlbatch-v1-0-0-1", "ref", "h", "v1.0.0", agent_features=manifests.AGENT_FEATURES)
    manifest = Manifest.from_json(dataclasses.replace(_manifest(), vm_image=image).to_json())
    assert manifest.vm_image.agent_features == (manifests.SWEEP_NODES,)
    older = json.loads(_manifest().to_json())
    del older["vm_image"]["agent_features"]  # a release made before they were recorded
    assert Manifest.from_json(json.dumps(older)).vm_image.agent_features == ()


def test_missing_release_says_so(tmp_path):
    with pytest.raises(NotFound, match="release v9.9.9 does not exist"):
        manifests.load(FileBucket(tmp_path), "v9.9.9")
