"""Validation by schema (pydantic v2) in the house's words: every problem of a settings block
or a catalog at once, each naming its path (`mlbatch.profiles.gcp.zones[1]`,
`jobs.train-digits.params.n_estimators.default`) and the form expected.

The models (mlbatch.core.settings, mlbatch.core.catalog) give each field a `description`:
the expected form, shown in errors and in the JSON Schema editors read. A check the
declarative constraints cannot say raises `problem(...)` with its own words, or
`whole(...)` for a message that stands alone.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError

PROBLEM = "mlbatch_problem"  # a value's check: its message is the expected form
WHOLE = "mlbatch_whole"  # the message alone: it names what it is about


def problem(form: str) -> PydanticCustomError:
    """A failed check of one value; `form` is what was expected (shown as the field's description is)."""
    return PydanticCustomError(PROBLEM, "{message}", {"message": form})


def whole(message: str) -> PydanticCustomError:
    """A failed check that names what it is about (two fields, a file): shown as it is."""
    return PydanticCustomError(WHOLE, "{message}", {"message": message})


def path_text(prefix: str, loc: tuple[int | str, ...]) -> str:
    """`('zones', 1)` under `mlbatch.profiles.gcp` -> `mlbatch.profiles.gcp.zones[1]`."""
    text = prefix
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part != "[key]":
            text += f".{part}" if text else str(part)
    return text


def _unwrap(annotation: Any) -> Any:
    """The type under Optional and Annotated."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def describe(model: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """The description (expected form) of the field at `loc` in `model`, or ""."""
    current: Any = model
    description = ""
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return description
            description = field.description or ""
            current = field.annotation
            continue
        origin = typing.get_origin(current)
        if origin in (dict, Mapping):
            if parts and parts[0] == "[key]":
                return _key_description(typing.get_args(current)[0]) or description
            current = typing.get_args(current)[1]
        elif origin in (list, tuple):
            current = typing.get_args(current)[0]
    return description


def _key_description(annotation: Any) -> str:
    """A mapping's key annotated `Annotated[str, Field(description=..., pattern=...)]`: its description."""
    for meta in typing.get_args(annotation)[1:] if typing.get_origin(annotation) is typing.Annotated else ():
        if getattr(meta, "description", None):
            return str(meta.description)
    return ""


def problems(exc: ValidationError, model: type[BaseModel], prefix: str, template: str, keys: Mapping[str, str]) -> list[str]:
    """One line per problem, in the order found: `template` with {where} (the path), {value}
    (its repr) and {form} (the field's description, or a check's own words); a check raising
    `whole` says all itself. `keys` names what a mapping's keys are (`jobs` -> "job name")
    for a key that breaks its pattern; unknown keys of one mapping share a line."""
    lines: list[str] = []
    unknown: dict[tuple, list[str]] = {}
    for error in exc.errors():
        loc, kind, value = tuple(error["loc"]), error["type"], error.get("input")
        if kind == "extra_forbidden":
            unknown.setdefault(loc[:-1], []).append(str(loc[-1]))
            continue
        where = path_text(prefix, loc)
        if kind == WHOLE:
            lines.append(str(error["ctx"]["message"]))
            continue
        form = error["ctx"]["message"] if kind == PROBLEM else describe(model, loc) or error["msg"]
        if loc and loc[-1] == "[key]":
            name = keys.get(str(loc[-3]) if len(loc) >= 3 else "", "key")
            lines.append(f"invalid {name} {value!r} ({where}): expected {form}")
        elif kind == "missing":
            lines.append(f"{where} is missing: expected {form}")
        else:
            lines.append(template.format(where=where, value=repr(value), form=form))
    for parent, names in unknown.items():
        known = sorted(_fields_at(model, parent))
        where = path_text(prefix, parent) or "the top level"
        near = [f"{n} -> {m[0]}" for n in sorted(names) if (m := difflib.get_close_matches(n, known, n=1))]
        hint = f" (did you mean {', '.join(near)}?)" if near else ""
        lines.append(f"{where}: unknown keys {sorted(names)}{hint}; expected some of {known}")
    return lines


def _fields_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            current = current.model_fields[str(part)].annotation
        elif typing.get_origin(current) in (dict, Mapping):
            current = typing.get_args(current)[1]
        elif typing.get_origin(current) in (list, tuple):
            current = typing.get_args(current)[0]
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [field.alias or name for name, field in current.model_fields.items()]
    return []


def joined(what: str, lines: list[str]) -> str:
    """`what: line` for one problem; a count and one problem a line for several."""
    if len(lines) == 1:
        return f"{what}{lines[0]}"
    return f"{what}{len(lines)} problems:\n" + "\n".join(f"  - {line}" for line in lines)
