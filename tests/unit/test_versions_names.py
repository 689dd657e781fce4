import datetime as dt

import pytest

from mlbatch.core.errors import BadInput, ExitCode
from mlbatch.core.names import (
    MAX_JOB_NAME,
    check_gce_name,
    check_labels,
    image_name,
    instance_name,
    job_of_run_id,
    new_run_id,
)
from mlbatch.core.versions import parse_version, sort_key


@pytest.mark.parametrize("tag", ["v0.1.0", "v1.4.0", "v10.20.30", "v1.4.0-rc.1", "v0.0.0-demo.20261123120000"])
def test_valid_versions(tag):
    assert parse_version(tag).tag == tag


@pytest.mark.parametrize("tag", ["", "1.4.0", "v1.4", "v01.4.0", "v1.4.0+build", "v1.4.0-", "latest", "v1.4.0;rm", "v1.4.0-ünï"])
def test_invalid_versions_name_the_expected_form(tag):
    with pytest.raises(BadInput, match="expected vMAJOR.MINOR.PATCH") as info:
        parse_version(tag)
    assert info.value.exit_code == ExitCode.BAD_INPUT


def test_slug_is_a_gce_name_fragment():
    assert parse_version("v1.4.0-RC.1").slug == "v1-4-0-rc-1"


def test_prereleases_sort_before_their_release():
    tags = ["v1.0.0", "v1.0.0-rc.1", "v0.9.0", "v1.0.1"]
    assert sorted(tags, key=sort_key) == ["v0.9.0", "v1.0.0-rc.1", "v1.0.0", "v1.0.1"]


# Every precedence example of semver.org (2.0.0, item 11), and the rc.2 / rc.10 of issue 17.
SEMVER_ORG_ORDERS = [
    ["1.0.0", "2.0.0", "2.1.0", "2.1.1"],
    ["1.0.0-alpha", "1.0.0"],
    ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2", "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0"],
    ["1.0.0-rc.2", "1.0.0-rc.10"],
]


@pytest.mark.parametrize("order", SEMVER_ORG_ORDERS, ids=lambda order: " < ".join(order))
def test_versions_order_as_semver_org_says(order):
    tags = [f"v{v}" for v in order]
    for shuffled in (list(reversed(tags)), tags[1::2] + tags[0::2]):
        assert sorted(shuffled, key=sort_key) == tags
    versions = [parse_version(tag) for tag in tags]
    for lower, higher in zip(versions, versions[1:], strict=False):
        assert lower < higher and higher > lower and not higher < lower and lower != higher
    assert max(versions) == versions[-1] and min(versions) == versions[0]


def test_run_id_and_instance_name_fit_gce_limits():
    job = "j" * MAX_JOB_NAME
    run_id = new_run_id(job, dt.datetime(2026, 11, 23, 12, 0, 0, tzinfo=dt.UTC))
    assert run_id.startswith(f"{job}-20261123-120000-")
    assert job_of_run_id(run_id) == job
    name = instance_name(run_id, 10)
    assert len(name) <= 63 and check_gce_name(name)


def test_too_long_job_names_are_refused():
    with pytest.raises(BadInput, match="at most 30"):
        new_run_id("j" * (MAX_JOB_NAME + 1))


def test_image_name_carries_version_and_time():
    name = image_name("v1-4-0", dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC))
    assert name == "mlbatch-v1-4-0-20260102030405"


def test_labels_are_checked():
    check_labels({"managed-by": "mlbatch", "version": "v1-4-0"})
    with pytest.raises(BadInput):
        check_labels({"version": "v1.4.0"})
