"""What Rundeck does to an exported job before and when it runs its step, for the tests.

- An option value is checked with Groovy's `value ==~ opt.regex` (Java's Matcher.matches():
  the whole value) unless the option is enforced (then it must be one of `values`) or the
  value is empty (rundeck/rundeck, ExecutionService.validateInputOptionValues).
- The step's `${option.NAME}` and `${job.execid}` are replaced by the values as they are,
  with no quoting of their own (DataContextUtils.replaceDataReferences), and the node's
  shell parses the result.

Python's `re` stands in for Java's regex: the exported guard and type patterns are written
in the part of the syntax the two read alike.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_REFERENCE = re.compile(r"\$\{option\.([a-z0-9_]+)\}")


def accepts(option: Mapping[str, Any], value: str) -> bool:
    """Whether Rundeck lets `value` through as this option's value."""
    if option.get("enforced"):
        return value in option.get("values", ())
    return not value or not option.get("regex") or re.fullmatch(option["regex"], value) is not None


def substitute(command: str, options: Mapping[str, str], execid: str) -> str:
    """The step's command line after Rundeck's substitution, as the node's shell gets it."""
    command = command.replace("${job.execid}", execid)
    return _REFERENCE.sub(lambda m: options[m.group(1)], command)
