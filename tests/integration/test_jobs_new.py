"""`invoke jobs.new NAME` as a user runs it, in a copy of the checkout: the job's code, its
catalog entry and its test are written, the catalog still validates, the new test passes;
a taken or bad name is refused with 100 and nothing is written."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from mlbatch.core.catalog import parse_catalog
from tests.conftest import ROOT
from tests.integration.helpers import INVOKE


@pytest.fixture
def checkout(tmp_path):
    """What jobs.new reads and writes: tasks/, invoke.yaml, batch_code/ and containers/ (no git)."""
    copy = tmp_path / "checkout"
    for name in ("tasks", "batch_code", "containers"):
        shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "invoke.yaml", copy / "invoke.yaml")
    return copy


def jobs_new(checkout, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([INVOKE, "jobs.new", *args], cwd=checkout, capture_output=True, text=True, timeout=120)


def tree(folder) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_a_new_job_gets_its_code_its_catalog_entry_and_a_test_that_passes(checkout):
    made = jobs_new(checkout, "score-users")
    assert made.returncode == 0, made.stdout + made.stderr
    for path in ("batch_code/score_users.py", "batch_code/jobs.yaml", "tests/jobs/test_score_users.py"):
        assert f"wrote {path}" in made.stdout
    catalog = parse_catalog((checkout / "batch_code" / "jobs.yaml").read_text(), {"trainer"})
    assert catalog["score-users"].command == ("python", "score_users.py") and "train-digits" in catalog
    assert (checkout / "batch_code" / "jobs.yaml").read_text().startswith("# yaml-language-server: $schema=")
    ran = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/jobs/test_score_users.py"],
        cwd=checkout, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr
    listed = subprocess.run([INVOKE, "jobs"], cwd=checkout, capture_output=True, text=True, timeout=120)
    assert any(line.startswith("score-users ") for line in listed.stdout.splitlines()), listed.stdout


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("train-digits", "job 'train-digits' is already in batch_code/jobs.yaml"),
        ("Score_Users", "invalid job name 'Score_Users'"),
        ("--score", "unknown option --score"),
        ("a-name-that-is-far-too-long-for-a-job", "at most 30 characters"),
    ],
)
def test_a_taken_or_bad_name_is_refused_with_100_and_nothing_is_written(checkout, name, message):
    before = tree(checkout)
    refused = jobs_new(checkout, name)
    assert refused.returncode == 100, refused.stdout + refused.stderr
    assert message in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert tree(checkout) == before


def test_a_name_whose_file_exists_is_refused(checkout):
    (checkout / "batch_code" / "score_users.py").write_text("# someone's work\n")
    before = tree(checkout)
    refused = jobs_new(checkout, "score-users")
    assert refused.returncode == 100 and "batch_code/score_users.py exists" in refused.stderr
    assert tree(checkout) == before
