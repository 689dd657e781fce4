"""The job container's limits (issue 16, item 7): from the machine type, less the agent's and
the engine's headroom, or the job's own `memory_mb`/`pids` (validated against the machine);
carried in the run's spec and handed to the engine; an out-of-memory kill recorded as such."""

import pytest

from mlbatch.agent.runner import JOB_OOM_SCORE_ADJ, job_limits, killed_for_memory
from mlbatch.core import machines
from mlbatch.core.catalog import parse_catalog
from mlbatch.core.errors import BadInput
from mlbatch.run.launch import Prepared, run_spec
from mlbatch.run.prices import load_prices
from tests.support.releases import publish_release


@pytest.mark.parametrize(
    ("machine_type", "vcpus", "memory_mb"),
    [
        ("e2-small", 0.5, 2048),
        ("e2-standard-4", 4, 16384),
        ("n1-standard-2", 2, 7680),
        ("n2-highmem-8", 8, 65536),
        ("n2-custom-6-20480", 6, 20480),
    ],
)
def test_shapes_of_predefined_shared_core_and_custom_types(machine_type, vcpus, memory_mb):
    shape = machines.shape(machine_type)
    assert (shape.vcpus, shape.memory_mb) == (vcpus, memory_mb)


def test_the_job_gets_the_machine_less_the_headroom_and_1024_pids_a_vcpu():
    assert machines.job_limits("e2-small") == machines.Limits(memory_mb=2048 - 512, pids=1024)
    assert machines.job_limits("e2-standard-4") == machines.Limits(memory_mb=16384 - 1638, pids=4096)
    assert machines.job_limits("e2-standard-4", memory_mb=2000, pids=100) == machines.Limits(2000, 100)
    # A type the table does not know: no memory limit, a fixed pids limit.
    assert machines.job_limits("z9-mystery-4") == machines.Limits(0, machines.PIDS_WITHOUT_SHAPE)


def test_the_price_estimate_reads_the_same_shapes():
    table = load_prices()
    rate = table.data["regions"]["europe-west4"]["e2"]["on_demand"]
    assert table.hourly("e2-small", False, "europe-west4") == pytest.approx(0.5 * rate["vcpu"] + 2 * rate["gb"])


def _catalog(**fields) -> str:
    job = ", ".join(f"{k}: {v}" for k, v in fields.items())
    return f"jobs:\n  t: {{container: trainer, command: [x], {job}}}\n"


def test_a_job_may_set_its_own_limits_within_its_machine():
    job = parse_catalog(_catalog(machine_type="e2-small", memory_mb=128, pids=64))["t"]
    assert (job.memory_mb, job.pids) == (128, 64)
    assert parse_catalog(_catalog(machine_type="e2-small"))["t"].memory_mb == 0  # from the machine type


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"machine_type": "e2-small", "memory_mb": 2048},
            "jobs.t.memory_mb 2048 must be an integer from 64 to 1536 (what e2-small",
        ),
        ({"machine_type": "e2-small", "memory_mb": 8}, "must be an integer from 64 to 1536"),
        ({"memory_mb": "'1g'"}, "jobs.t.memory_mb"),
        ({"pids": 2}, "jobs.t.pids 2 must be an integer from 16"),
    ],
)
def test_limits_beyond_the_machine_or_of_the_wrong_form_are_refused_naming_the_job(fields, message):
    with pytest.raises(BadInput, match=message.replace("(", r"\(")):
        parse_catalog(_catalog(**fields))


def test_the_run_spec_carries_the_limits_of_its_job(tmp_path):
    from mlbatch.core.bucket import open_bucket

    bucket = open_bucket(f"file://{tmp_path}")
    manifest = publish_release(bucket, "v1.0.0")
    job = manifest.jobs["sleep"]  # e2-standard-4 (the default), no limit of its own
    spec = run_spec(bucket, Prepared(manifest, job, {"seconds": 1}, 60), "sleep-20260101-000000-abcd", "")
    assert (spec.memory_limit_mb, spec.pids_limit) == (16384 - 1638, 4096)
    assert job_limits(spec) == {
        "oom_score_adj": JOB_OOM_SCORE_ADJ,
        "mem_limit": "14746m",
        "memswap_limit": "14746m",  # no swap beyond the limit
        "pids_limit": 4096,
    }


def test_an_old_spec_without_limits_runs_without_them(tmp_path):
    from mlbatch.core import runs

    spec = runs.RunSpec.from_dict(
        {
            "run_id": "sleep-20260101-000000-abcd", "job": "sleep", "version": "v1.0.0", "bucket": "file:///b",
            "container": "r/trainer@sha256:" + "0" * 64, "code_key": "k", "code_sha256": "0" * 64, "argv": ["x"],
            "params": {}, "timeout_seconds": 60, "created": "2026-01-01T00:00:00+00:00", "vm_image": "img",
        }
    )  # fmt: skip
    assert job_limits(spec) == {"oom_score_adj": JOB_OOM_SCORE_ADJ}


@pytest.mark.parametrize(
    ("state", "limit", "message"),
    [
        ({"OOMKilled": True, "ExitCode": 137}, 128, "killed: out of memory at 128 MB limit"),
        ({"OOMKilled": True, "ExitCode": 137}, 0, "killed: out of memory (the VM's: no limit was set)"),
        ({"OOMKilled": False, "ExitCode": 137}, 128, "killed: out of memory at 128 MB limit (SIGKILL under the limit;"),
        ({"OOMKilled": False, "ExitCode": 137}, 0, ""),  # no limit, no OOM report: a kill -9, not memory
        ({"OOMKilled": False, "ExitCode": 1}, 128, ""),
    ],
)
def test_an_out_of_memory_kill_is_named_with_its_limit(state, limit, message):
    found = killed_for_memory(state, limit)
    assert found.startswith(message) if message else found == ""
