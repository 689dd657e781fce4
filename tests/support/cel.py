"""The part of CEL that IAM conditions on Cloud Storage use, evaluated as IAM does.

From the IAM Conditions pages (https://cloud.google.com/iam/docs/conditions-overview,
.../conditions-attribute-reference, .../conditions-resource-attributes) and the CEL language
definition (https://github.com/google/cel-spec/blob/master/doc/langdef.md):
- attributes `resource.name`, `resource.type`, `resource.service` (strings);
- `api.getAttribute(NAME, DEFAULT)`: an API attribute of the request, or DEFAULT when the
  request has none (Cloud Storage's `storage.googleapis.com/objectListPrefix` is a list's prefix);
- string functions `startsWith`, `endsWith`, `extract("...{var}...")` (the text the template's
  one variable matches, or "" when the template does not occur);
- `==`, `!=`, `&&`, `||`, `!`, parentheses; string literals in double or single quotes.
Anything else is a ConditionError: a stand-in that guessed would grant what IAM refuses.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any


class ConditionError(ValueError):
    pass


_TOKEN = re.compile(
    r"""\s*(?:(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<op>&&|\|\||==|!=|[().,!]))"""
)
ATTRIBUTES = ("name", "type", "service")


def _tokens(expression: str) -> list[tuple[str, str]]:
    out, at = [], 0
    while expression[at:].strip():
        match = _TOKEN.match(expression, at)
        if not match:
            raise ConditionError(f"cannot parse {expression[at : at + 30]!r}")
        if match["string"]:
            out.append(("string", _unquote(match["string"])))
        elif match["name"]:
            out.append(("name", match["name"]))
        else:
            out.append(("op", match["op"]))
        at = match.end()
    return out


def _unquote(literal: str) -> str:
    """A CEL string literal's text; only the escapes of quotes and backslash are modelled."""
    body = literal[1:-1]
    if re.search(r"\\[^\\'\"]", body):
        raise ConditionError(f"escape in {literal!r} is not modelled")
    return re.sub(r"\\(.)", r"\1", body)


def extract(value: str, template: str) -> str:
    """CEL's extract for IAM: the template's literal text around one {var}."""
    found = re.fullmatch(r"(?P<before>[^{}]*)\{[A-Za-z_][A-Za-z0-9_]*\}(?P<after>[^{}]*)", template)
    if not found:
        raise ConditionError(f"extract template {template!r} must hold exactly one {{variable}}")
    before, after = found["before"], found["after"]
    start = value.find(before)
    if start < 0:
        return ""
    rest = value[start + len(before) :]
    if not after:
        return rest
    end = rest.find(after)
    return rest[:end] if end >= 0 else ""


def evaluate(expression: str, resource: Mapping[str, str], api: Mapping[str, str]) -> bool:
    """The condition's value for a request on `resource` (name, type, service) with API
    attributes `api`."""
    tokens = _tokens(expression)
    at = 0

    def peek() -> tuple[str, str] | None:
        return tokens[at] if at < len(tokens) else None

    def take(kind: str | None = None, text: str | None = None) -> tuple[str, str]:
        nonlocal at
        if at >= len(tokens):
            raise ConditionError(f"{expression!r} ends too early")
        token = tokens[at]
        if (kind and token[0] != kind) or (text and token[1] != text):
            raise ConditionError(f"expected {text or kind} at {token[1]!r} in {expression!r}")
        at += 1
        return token

    def arguments() -> list[Any]:
        take("op", "(")
        values = []
        while peek() != ("op", ")"):
            values.append(value())
            if peek() == ("op", ","):
                take()
        take("op", ")")
        return values

    def primary() -> Any:
        kind, text = take()
        if kind == "string":
            result: Any = text
        elif (kind, text) == ("op", "("):
            result = disjunction()
            take("op", ")")
        elif (kind, text) == ("name", "resource"):
            take("op", ".")
            attribute = take("name")[1]
            if attribute not in ATTRIBUTES:
                raise ConditionError(f"resource.{attribute} is not a resource attribute")
            result = resource.get(attribute, "")
        elif (kind, text) == ("name", "api"):
            take("op", ".")
            take("name", "getAttribute")
            args = arguments()
            if len(args) != 2 or not all(isinstance(a, str) for a in args):
                raise ConditionError("api.getAttribute takes an attribute name and a default")
            result = api.get(args[0], args[1])
        elif (kind, text) in (("name", "true"), ("name", "false")):
            result = text == "true"
        else:
            raise ConditionError(f"unexpected {text!r} in {expression!r}")
        while peek() == ("op", "."):
            take()
            method = take("name")[1]
            args = arguments()
            if not isinstance(result, str) or len(args) != 1 or not isinstance(args[0], str):
                raise ConditionError(f"{method} takes one string, on a string")
            if method == "startsWith":
                result = result.startswith(args[0])
            elif method == "endsWith":
                result = result.endswith(args[0])
            elif method == "extract":
                result = extract(result, args[0])
            else:
                raise ConditionError(f"{method} is not a function IAM conditions offer here")
        return result

    def value() -> Any:
        if peek() == ("op", "!"):
            take()
            inner = value()
            if not isinstance(inner, bool):
                raise ConditionError("! applies to a boolean")
            return not inner
        left = primary()
        if peek() in (("op", "=="), ("op", "!=")):
            operator = take()[1]
            right = primary()
            return (left == right) if operator == "==" else (left != right)
        return left

    def conjunction() -> Any:
        result = value()
        while peek() == ("op", "&&"):
            take()
            right = value()
            result = _boolean(result) and _boolean(right)
        return result

    def disjunction() -> Any:
        result = conjunction()
        while peek() == ("op", "||"):
            take()
            right = conjunction()
            result = _boolean(result) or _boolean(right)
        return result

    result = disjunction()
    if peek() is not None:
        raise ConditionError(f"unexpected {peek()[1]!r} in {expression!r}")  # type: ignore[index]
    return _boolean(result)


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConditionError(f"a condition must be a boolean, not {value!r}")
    return value
