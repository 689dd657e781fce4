"""The price table's estimates, `--version latest` and the catalog's concurrency field."""

import pytest

from mlbatch.core.bucket import open_bucket
from mlbatch.core.catalog import parse_catalog
from mlbatch.core.errors import BadInput, NotFound
from mlbatch.core.manifest import list_versions, resolve_version
from mlbatch.run.prices import load_prices


def test_the_packaged_price_table_names_its_source_and_date():
    table = load_prices()
    assert "cloud.google.com/compute/vm-instance-pricing" in table.source and "2024-06-01" in table.source


@pytest.mark.parametrize(
    ("machine", "spot", "region", "hourly"),
    [
        ("e2-standard-4", False, "us-central1", 4 * 0.021811 + 16 * 0.002923),
        ("e2-small", True, "europe-west4", 0.5 * 0.007203 + 2 * 0.000965),
        ("n1-standard-8", False, "us-central1", 8 * 0.031611 + 30 * 0.004237),
        ("n2-highmem-2", True, "europe-west4", 2 * 0.008423 + 16 * 0.001129),
    ],
)
def test_hourly_prices_from_shape_and_rates(machine, spot, region, hourly):
    assert load_prices().hourly(machine, spot, region) == pytest.approx(hourly)


def test_gpus_unknown_regions_and_the_billing_minimum():
    table = load_prices()
    base = table.hourly("n1-standard-4", False, "us-central1")
    assert table.hourly("n1-standard-4", False, "us-central1", "nvidia-tesla-t4", 2) == pytest.approx(base + 0.70)
    assert table.hourly("e2-standard-4", False, "mars-north1") is None
    assert table.hourly("e2-standard-4", False, "us-central1", "nvidia-unknown", 1) is None
    assert table.cost(3.6, 10) == pytest.approx(3.6 * 60 / 3600), "a one-minute minimum per instance"
    assert table.cost(3.6, 7200) == pytest.approx(7.2)


def test_a_price_table_of_ones_own(tmp_path):
    path = tmp_path / "prices.yaml"
    path.write_text(
        "source: our contract\ndate: '2026-01-01'\nmemory_per_vcpu: {standard: 4}\n"
        "regions: {here-west1: {e2: {on_demand: {vcpu: 1, gb: 0}}}}\n"
    )
    table = load_prices(path)
    assert table.hourly("e2-standard-2", False, "here-west1") == 2 and "our contract" in table.source
    path.write_text("regions: {}\n")
    with pytest.raises(BadInput, match="source, date and regions"):
        load_prices(path)


def test_latest_is_the_newest_release_that_is_not_a_pre_release(tmp_path):
    bucket = open_bucket(f"file://{tmp_path}")
    with pytest.raises(NotFound, match="no release that is not a pre-release"):
        resolve_version(bucket, "latest")
    for version in ("v1.2.0", "v1.10.0-rc.1", "v1.9.0", "v0.9.9"):
        bucket.write(f"releases/{version}/manifest.json", b"{}")
    assert resolve_version(bucket, "latest") == "v1.9.0"
    bucket.write("releases/v1.10.0/manifest.json", b"{}")
    assert resolve_version(bucket, "latest") == "v1.10.0", "resolved when asked, not cached"
    assert resolve_version(bucket, "v1.2.0") == "v1.2.0"
    with pytest.raises(BadInput, match="invalid version 'newest'"):
        resolve_version(bucket, "newest")


def test_a_manifest_outside_a_version_folder_is_skipped_with_a_warning(tmp_path, caplog):
    bucket = open_bucket(f"file://{tmp_path}")
    for version in ("v1.0.0", "v1.1.0-rc.2", "v1.1.0-rc.10"):
        bucket.write(f"releases/{version}/manifest.json", b"{}")
    bucket.write("releases/x/manifest.json", b"{}")  # a stray object: someone's copy, a test's leftover
    bucket.write("releases/v1.0.0/old/manifest.json", b"{}")
    assert resolve_version(bucket, "latest") == "v1.0.0"
    assert list_versions(bucket) == ["v1.0.0", "v1.1.0-rc.2", "v1.1.0-rc.10"]
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("releases/x/manifest.json" in w and "'x' is not a release version" in w for w in warned), warned
    assert any("releases/v1.0.0/old/manifest.json" in w for w in warned), warned


CATALOG = "jobs:\n  nightly:\n    container: trainer\n    command: [python, x.py]\n"


def test_concurrency_defaults_to_allow_and_is_validated():
    assert parse_catalog(CATALOG)["nightly"].concurrency == "allow"
    assert parse_catalog(CATALOG + "    concurrency: skip\n")["nightly"].concurrency == "skip"
    with pytest.raises(BadInput, match="concurrency 'never' must be one of allow, skip, wait"):
        parse_catalog(CATALOG + "    concurrency: never\n")
