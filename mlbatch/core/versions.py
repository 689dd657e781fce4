"""Release versions: git tags of the form vMAJOR.MINOR.PATCH[-pre].

The form is checked here (semver.org's grammar with a leading "v"); the order is semver's
precedence as the `semver` library implements it (pre-releases before their release,
numeric identifiers compared as numbers: rc.2 < rc.10).
"""

from __future__ import annotations

import dataclasses
import functools
import re

import semver

from mlbatch.core.errors import BadInput

# semver.org's grammar, with the leading "v" of a git tag and no build metadata
# (a "+" has no place in GCE names or labels, where the version must go).
_SEMVER_TAG = re.compile(
    r"^v(?P<major>0|[1-9]\d*)\.(?P<minor>0|[1-9]\d*)\.(?P<patch>0|[1-9]\d*)"
    r"(?:-(?P<pre>(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)"
    r"(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?$",
    re.ASCII,  # \d must not take other scripts' digits: "v0.0.1\u0660" is not v0.0.10
)
EXPECTED_FORM = "vMAJOR.MINOR.PATCH or vMAJOR.MINOR.PATCH-PRERELEASE, e.g. v1.4.0 or v1.4.0-rc.1"


@functools.total_ordering
@dataclasses.dataclass(frozen=True)
class Version:
    major: int
    minor: int
    patch: int
    pre: str = ""

    @property
    def tag(self) -> str:
        return f"v{self.major}.{self.minor}.{self.patch}" + (f"-{self.pre}" if self.pre else "")

    @property
    def slug(self) -> str:
        """The version as a GCE name fragment and label value: v1.4.0-rc.1 -> v1-4-0-rc-1."""
        return re.sub(r"[^a-z0-9]+", "-", self.tag.lower()).strip("-")

    @property
    def precedence(self) -> semver.Version:
        return semver.Version(self.major, self.minor, self.patch, prerelease=self.pre or None)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self.precedence < other.precedence

    def __str__(self) -> str:
        return self.tag


def parse_version(text: str) -> Version:
    match = _SEMVER_TAG.fullmatch(text or "")  # fullmatch: `$` alone lets a trailing newline through
    if not match or len(text) > 40:
        raise BadInput(f"invalid version {text!r}: expected {EXPECTED_FORM}")
    return Version(int(match["major"]), int(match["minor"]), int(match["patch"]), match["pre"] or "")


def is_version(text: str) -> bool:
    try:
        parse_version(text)
    except BadInput:
        return False
    return True


def sort_key(tag: str) -> Version:
    """Order release tags by semver precedence."""
    return parse_version(tag)
