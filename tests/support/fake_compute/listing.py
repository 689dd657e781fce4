"""What every Compute list method shares: the `filter` expression and pagination.

The filter grammar the fake understands is the documented one for Compute lists:
`field = value`, `field != value`, or several expressions in parentheses, ANDed (implicitly
or with AND). Dotted fields reach into the resource (`labels.job`, `scheduling.preemptible`).
Anything else is a 400, as the real API answers an expression it cannot parse: a fake that
silently ignored a filter would hide a caller that relies on one.
"""

from __future__ import annotations

import re
from typing import Any

from tests.support.fake_compute.errors import ApiError, bad_filter

_EXPRESSION = re.compile(r'([A-Za-z][\w.-]*)\s*(!=|=)\s*(?:"([^"]*)"|([^\s()"]+))')
_GROUP = re.compile(r"\(([^()]*)\)")


def _parse(expression: str) -> list[tuple[str, str, str]]:
    text = expression.strip()
    if not text:
        return []
    if not text.startswith("("):
        match = _EXPRESSION.fullmatch(text)
        if not match:
            raise bad_filter(expression)
        return [(match[1], match[2], match[3] if match[3] is not None else match[4])]
    terms, rest = [], text
    while rest:
        group = _GROUP.match(rest)
        if not group:
            raise bad_filter(expression)
        terms += _parse(group[1]) or []
        rest = rest[group.end() :].strip()
        if rest.startswith("AND "):
            rest = rest[4:].strip()
    return terms


def _field(resource: dict[str, Any], path: str) -> str | None:
    value: Any = resource
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    if isinstance(value, bool):
        return "true" if value else "false"
    return None if isinstance(value, dict | list) else str(value)


def filtered(items: list[dict[str, Any]], expression: str) -> list[dict[str, Any]]:
    terms = _parse(expression)

    def keep(item: dict[str, Any]) -> bool:
        for field, op, value in terms:
            equal = _field(item, field) == value
            if equal != (op == "="):
                return False
        return True

    return [i for i in items if keep(i)]


def page(kind: str, items: list[dict[str, Any]], params: dict[str, str], page_size: int) -> dict[str, Any]:
    """One page: at most maxResults (default and maximum 500) and never more than the fake's page size."""
    limit = min(int(params.get("maxResults", 500)), 500, page_size)
    if limit < 0:
        raise ApiError(400, f"Invalid value for field 'maxResults': '{limit}'. Must be non-negative.")
    token = params.get("pageToken", "")
    if token and not re.fullmatch(r"page-\d+", token):
        raise ApiError(400, f"Invalid value for field 'pageToken': '{token}'. Invalid page token.")
    start = int(token[5:]) if token else 0
    result: dict[str, Any] = {"kind": kind, "items": items[start : start + limit]}
    if start + limit < len(items):
        result["nextPageToken"] = f"page-{start + limit}"
    return result


def listed(kind: str, items: list[dict[str, Any]], params: dict[str, str], page_size: int) -> dict[str, Any]:
    if "orderBy" in params:
        raise ApiError(400, f"Invalid value for field 'orderBy': '{params['orderBy']}'. The fake does not sort.")
    return page(kind, filtered(items, params.get("filter", "")), params, page_size)
