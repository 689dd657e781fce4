"""Typed command-line values: whole numbers, numbers, durations and choices, each refused
with BadInput (exit 100) naming the option and the form it expects.

`tasks/common.py` applies these to a task's options by their annotations (`keep: int`,
`timeout: Seconds | None`, `format: Format`), before the task's body runs; the package
calls them where an option arrives as text from elsewhere (a trigger, a test).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Sequence
from typing import Annotated, Literal

from mlbatch.core.errors import BadInput

# How a listing or a show prints: aligned columns for people, JSON for machines.
Format = Literal["table", "json"]
FORMATS: tuple[str, ...] = ("table", "json")

_DURATION = re.compile(r"^(?P<n>\d+)(?P<unit>[smhd]?)$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
DURATION_FORM = "a duration such as 90, 90s, 10m, 2h or 1d"


def whole_number(value: str | int, option: str, *, minimum: int = 0) -> int:
    """`--keep 3`: a whole number, at least `minimum`."""
    if isinstance(value, bool):
        raise BadInput(f"invalid {option} {value!r}: expected a whole number")
    if isinstance(value, int):
        number = value
    elif re.fullmatch(r"\d{1,18}", value.strip()):
        number = int(value)
    else:
        raise BadInput(f"invalid {option} {value!r}: expected a whole number, e.g. {max(minimum, 3)}")
    if number < minimum:
        raise BadInput(f"invalid {option} {number}: expected a whole number of at least {minimum}")
    return number


def positive(value: str | int, option: str) -> int:
    """`--repeat 5`: a whole number of 1 or more."""
    return whole_number(value, option, minimum=1)


def number(value: str | float, option: str) -> float:
    """`--min-age-hours 1.5`: a finite number of 0 or more."""
    if isinstance(value, bool):
        raise BadInput(f"invalid {option} {value!r}: expected a number")
    try:
        parsed = float(value)
    except ValueError:
        raise BadInput(f"invalid {option} {value!r}: expected a number, e.g. 1.5") from None
    if not math.isfinite(parsed) or parsed < 0:
        raise BadInput(f"invalid {option} {value!r}: expected a finite number of 0 or more, e.g. 1.5")
    return parsed


def seconds(value: str | int, option: str) -> int:
    """`--timeout 10m`: whole seconds from a number (seconds) or a number with a unit s, m, h, d."""
    if isinstance(value, int) and not isinstance(value, bool):
        return whole_number(value, option)
    match = _DURATION.match(str(value).strip().lower())
    if not match:
        raise BadInput(f"invalid {option} {value!r}: expected {DURATION_FORM}")
    return int(match["n"]) * _UNIT_SECONDS[match["unit"]]


def choice(value: str, option: str, choices: Sequence[str]) -> str:
    """`--format json`: one of `choices`."""
    if value not in choices:
        raise BadInput(f"invalid {option} {value!r}: expected {' or '.join(choices)}")
    return value


def since(text: str, option: str = "--since", now: dt.datetime | None = None) -> dt.datetime:
    """`--since 7d`: a moment, as a duration back from now (30m, 24h, 7d) or an ISO date/time
    (UTC unless it says otherwise)."""
    now = now or dt.datetime.now(dt.UTC)
    if _DURATION.match(text.strip().lower()) and text.strip()[-1:].isalpha():
        return now - dt.timedelta(seconds=seconds(text, option))
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise BadInput(f"invalid {option} {text!r}: expected e.g. 30m, 24h, 7d, 2026-11-24 or 2026-11-24T03:00") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


# Annotations of task options (tasks/common.py parses an option by the function beside its type).
Seconds = Annotated[int, seconds]  # a duration: 90, 90s, 10m, 2h, 1d
Positive = Annotated[int, positive]  # a count of 1 or more (rounds, tasks, runs)
