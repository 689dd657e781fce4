"""Typed command-line values (mlbatch.core.options): durations, counts, numbers, choices."""

from __future__ import annotations

import datetime as dt

import pytest

from mlbatch.core import options
from mlbatch.core.errors import BadInput


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("10m", 600), ("2h", 7200), ("1d", 86400), (" 5M ", 300)])
def test_durations(text, seconds):
    assert options.seconds(text, "--timeout") == seconds


@pytest.mark.parametrize("text", ["", "10 minutes", "1.5h", "-3", "h", "10mm", "ten"])
def test_bad_durations_name_the_option_and_the_form(text):
    with pytest.raises(BadInput, match=r"invalid --timeout .*: expected a duration such as 90, 90s, 10m, 2h or 1d"):
        options.seconds(text, "--timeout")


def test_counts_and_numbers():
    assert options.whole_number("3", "--keep") == 3 and options.positive("1", "--repeat") == 1
    with pytest.raises(BadInput, match=r"invalid --repeat 0: expected a whole number of at least 1"):
        options.positive("0", "--repeat")
    for bad in ("x", "-1", "1.5", ""):
        with pytest.raises(BadInput, match=r"invalid --keep .*: expected a whole number"):
            options.whole_number(bad, "--keep")
    assert options.number("1.5", "--min-age-hours") == 1.5
    for bad in ("nan", "inf", "-1", "soon"):
        with pytest.raises(BadInput, match=r"invalid --min-age-hours"):
            options.number(bad, "--min-age-hours")


def test_since_takes_a_duration_back_or_a_moment():
    now = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
    assert options.since("7d", now=now) == now - dt.timedelta(days=7)
    assert options.since("30m", now=now) == now - dt.timedelta(minutes=30)
    assert options.since("2026-11-24T03:00", now=now) == dt.datetime(2026, 11, 24, 3, 0, tzinfo=dt.UTC)
    with pytest.raises(BadInput, match="invalid --since '7': expected e.g. 30m"):
        options.since("7", now=now)
