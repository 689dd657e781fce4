"""The agent wheel holds the product only, and the bake's input hash ignores the tests."""

from __future__ import annotations

import datetime as dt
import re
import zipfile
from pathlib import Path

from mlbatch.release.bake import BAKE_INPUTS, WHEEL_SOURCES, BakeSource, build_wheel, copy_sources, input_hash, too_old
from tests.conftest import ROOT

NOT_PRODUCT = re.compile(r"(^|/)(tests?|testing|support)(/|$)|fake|memory_provider|conftest")


def copy_tree(names: tuple[str, ...], to: Path) -> Path:
    return copy_sources(ROOT, names, to)


def wheel_names(root: Path, out: Path) -> list[str]:
    with zipfile.ZipFile(build_wheel(root, out)) as wheel:
        return wheel.namelist()


def test_the_agent_wheel_holds_no_fake_nor_test_module(tmp_path):
    tree = copy_tree((*WHEEL_SOURCES, "tests"), tmp_path / "tree")
    # A checkout's build/lib may still hold modules since moved out of the package.
    stale = tree / "build" / "lib" / "mlbatch" / "testing"
    stale.mkdir(parents=True)
    (stale / "fake_compute.py").write_text("FAKE = True\n")
    names = wheel_names(tree, tmp_path / "out")
    assert "mlbatch/agent/main.py" in names and "mlbatch/core/runs.py" in names
    assert not [n for n in names if n.startswith(("mlbatch/run/", "mlbatch/release/", "mlbatch/providers/"))], (
        "agent and core only"
    )
    assert [n for n in names if NOT_PRODUCT.search(n)] == []
    assert {n.split("/")[0] for n in names} <= {"mlbatch", next(n for n in names if ".dist-info/" in n).split("/")[0]}


def test_editing_a_fake_does_not_change_the_bake_input_hash(tmp_path):
    tree = copy_tree((*BAKE_INPUTS, "tests"), tmp_path)
    before = input_hash(tree)
    with (tree / "tests" / "support" / "memory_provider.py").open("a") as fake:
        fake.write("# edited\n")
    assert input_hash(tree) == before
    with (tree / "mlbatch" / "agent" / "runner.py").open("a") as agent:
        agent.write("# edited\n")
    assert input_hash(tree) != before, "the hash does see what goes into the image"


def edited(tree: Path, name: str) -> str:
    with (tree / name).open("a") as source:
        source.write("# edited\n")
    return input_hash(tree)


def test_the_bake_input_hash_covers_what_goes_into_the_image_and_nothing_else(tmp_path):
    tree = copy_tree(("packer", "ansible", "mlbatch", "pyproject.toml", "README.md"), tmp_path)
    before = input_hash(tree)
    for outside in ("mlbatch/run/inspect.py", "mlbatch/release/flow.py", "mlbatch/providers/gce.py", "README.md"):
        assert edited(tree, outside) == before, f"{outside} is not in the image: no new bake"
    seen = {before}
    for inside in ("mlbatch/agent/runner.py", "mlbatch/core/runs.py", "mlbatch/__init__.py", "pyproject.toml",
                   "ansible/roles/agent/tasks/main.yml", "packer/mlbatch.pkr.hcl"):  # fmt: skip
        digest = edited(tree, inside)
        assert digest not in seen, f"{inside} goes into the image: a change must bake anew"
        seen.add(digest)


def test_the_bake_input_hash_covers_where_the_bake_starts_and_the_ca_bundle(tmp_path):
    """Issue 16, item 8: a new source image (gcp), base image digest (local) or CA bundle bakes anew,
    and the agent's lock is in the hash (under ansible/)."""
    tree = copy_tree(("packer", "ansible", "mlbatch", "pyproject.toml", "README.md"), tmp_path)
    link = "https://www.googleapis.com/compute/v1/projects/debian-cloud/global/images/debian-12-bookworm-v2026"
    hashes = {
        input_hash(tree),
        input_hash(tree, BakeSource(f"{link}1111")),
        input_hash(tree, BakeSource(f"{link}1212")),
        input_hash(tree, BakeSource(f"{link}1212", "a" * 64)),
        input_hash(tree, BakeSource("sha256:" + "b" * 64)),
    }
    assert len(hashes) == 5
    assert input_hash(tree, BakeSource(f"{link}1111")) == input_hash(tree, BakeSource(f"{link}1111"))
    bundle = tmp_path / "ca.pem"
    bundle.write_text("one")
    first = BakeSource.of("x", bundle)
    bundle.write_text("two")
    assert BakeSource.of("x", bundle) != first and BakeSource.of("x", None).ca_bundle_sha256 == ""
    assert edited(tree, "ansible/roles/agent/files/requirements.txt") not in hashes


def test_image_ages_as_docker_and_compute_engine_write_them():
    now = dt.datetime.now(dt.UTC)
    docker = (now - dt.timedelta(days=31)).strftime("%Y-%m-%dT%H:%M:%S.123456789Z")
    compute = (now - dt.timedelta(days=2)).astimezone(dt.timezone(dt.timedelta(hours=-8))).isoformat(timespec="milliseconds")
    lines: list[str] = []
    assert too_old(docker, 30, "old", lines.append) and "baked 31 days ago (max_image_age_days 30)" in lines[0]
    assert not too_old(compute, 30, "young", lines.append) and len(lines) == 1
    assert too_old(compute, 0, "young", lines.append)
