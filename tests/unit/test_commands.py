"""The run commands from their parsed options (mlbatch.run.commands, what `invoke run-batch` calls)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlbatch.core.bucket import FileBucket
from mlbatch.core.errors import BadInput
from mlbatch.core.settings import load_settings
from mlbatch.run import commands
from mlbatch.run.sweep import SweepRequest
from mlbatch.run.sweep_local import LocalTasks
from tests.conftest import ROOT
from tests.support.memory_provider import MemoryProvider, succeed
from tests.support.releases import publish_release


class FastTasks(LocalTasks):
    poll = 0.001
    state_check_every = 0.0


@pytest.fixture
def settings(tmp_path):
    return load_settings(
        {"profile": "local", "profiles": {"local": {"bucket": f"file://{tmp_path}/bucket", "registry": "127.0.0.1:5000"}}}, ROOT
    )


@pytest.mark.parametrize(
    "options, named",
    [
        ({"parallelism": 0, "sweeps": ("seconds=1,2",)}, "invalid --parallelism 0: expected 1 to"),
        ({"parallelism": 2}, "--parallelism applies to sweeps"),
        ({"detach": True, "sweeps": ("seconds=1,2",)}, "--detach does not apply to sweeps"),
        ({"timeout_seconds": 0}, "invalid --timeout 0: expected seconds from 1 to"),
    ],
)
def test_bad_options_are_refused_with_100_naming_them_before_anything_starts(settings, options, named):
    with pytest.raises(BadInput, match=named.replace("(", r"\(")):
        commands.run_batch(settings, commands.RunOptions("sleep", "v1.0.0", **options))
    bucket = Path(settings.bucket.removeprefix("file://"))  # the test's own (the state dir's is the checkout's)
    assert not bucket.exists() or not any(bucket.rglob("spec.json"))


def test_a_sweep_of_latest_prints_its_tasks_ranked_by_the_release_it_resolved_to(tmp_path, capsys):
    bucket = FileBucket(tmp_path / "bucket")
    publish_release(bucket, "v1.0.0")
    provider = MemoryProvider(tmp_path / "instances", zones=("europe-west4-a",))
    provider.script(succeed("a"), succeed("b"))
    runner = FastTasks(bucket, provider, lambda _: None)
    outcome = commands.sweep_and_show(bucket, runner, SweepRequest("sleep", "latest", sweeps=("seconds=1,2",)))
    assert outcome.exit_code == 0
    out = capsys.readouterr().out
    assert f"sweep {outcome.run_id}" in out and "run-batch --sweep sleep latest" in out
