"""Validate API requests against the official discovery documents shipped in
google-api-python-client (compute.v1 for the fake Compute API, batch.v1 for the fake
Cloud Batch API), the way the real APIs refuse bad requests.

Resources may be dotted paths ("projects.locations.jobs"). With `int_enums` (what the
google-cloud-* REST clients send with `$alt=json;enum-encoding=int`) an enum may come as
its number, the index into the document's enum list.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

COMPUTE = "compute.v1"
BATCH = "batch.v1"


@functools.cache
def document(api: str) -> dict[str, Any]:
    import googleapiclient

    path = Path(googleapiclient.__file__).parent / "discovery_cache" / "documents" / f"{api}.json"
    return json.loads(path.read_text())


def compute_v1() -> dict[str, Any]:
    return document(COMPUTE)


def method(resource: str, name: str, api: str = COMPUTE) -> dict[str, Any]:
    node = document(api)
    for part in resource.split("."):
        node = node["resources"][part]
    return node["methods"][name]


def check_params(resource: str, name: str, params: dict[str, str], api: str = COMPUTE) -> list[str]:
    """Query and path parameters: unknown names and bad values are errors."""
    spec = method(resource, name, api)["parameters"]
    errors = []
    for key, value in params.items():
        if key in ("alt", "prettyPrint", "$alt", "fields", "key"):  # system parameters
            continue
        p = spec.get(key)
        if p is None:
            errors.append(f"Invalid parameter: {key!r} is not a parameter of {api.split('.')[0]}.{resource}.{name}")
        elif "pattern" in p and not re.fullmatch(p["pattern"], value):
            errors.append(f"Invalid value for {key}: {value!r} does not match {p['pattern']}")
        elif p.get("type") == "integer" and not re.fullmatch(r"-?\d+", value):
            errors.append(f"Invalid value for {key}: {value!r} is not an integer")
    return errors


def without_nulls(value: Any) -> Any:
    """JSON nulls mean "not set" to the real API (Packer sends `"accessConfigs": [null]` and null
    metadata items): drop them before checking, as its JSON parser does."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value if v is not None]
    return value


def check_body(schema: str, body: Any, method_id: str, api: str = COMPUTE, int_enums: bool = False) -> list[str]:
    """Unknown fields, wrong types, enum values outside the document, bad names, missing required fields."""
    errors: list[str] = []
    rules = _Rules(document(api)["schemas"], method_id, int_enums)
    _check(rules.schemas[schema], body, schema[0].lower() + schema[1:], errors, rules)
    return errors


class _Rules:
    def __init__(self, schemas: dict[str, Any], method_id: str, int_enums: bool):
        self.schemas, self.method_id, self.int_enums = schemas, method_id, int_enums


def _check(spec: dict[str, Any], value: Any, where: str, errors: list[str], rules: _Rules) -> None:
    spec = rules.schemas[spec["$ref"]] if "$ref" in spec else spec
    kind = spec.get("type")
    if kind == "object" or "properties" in spec:
        if not isinstance(value, dict):
            errors.append(f"Invalid value at '{where}': expected an object")
            return
        props = spec.get("properties")
        if props is not None:
            for key, item in value.items():
                if key not in props:
                    errors.append(f"Invalid JSON payload received. Unknown name \"{key}\" at '{where}'")
                else:
                    _check(props[key], item, f"{where}.{key}", errors, rules)
            for key, prop in props.items():
                if rules.method_id in prop.get("annotations", {}).get("required", ()) and key not in value:
                    errors.append(f"Required field '{where}.{key}' not specified")
        elif "additionalProperties" in spec:
            for key, item in value.items():
                _check(spec["additionalProperties"], item, f"{where}[{key!r}]", errors, rules)
    elif kind == "array":
        if not isinstance(value, list):
            errors.append(f"Invalid value at '{where}': expected a list")
            return
        for i, item in enumerate(value):
            _check(spec["items"], item, f"{where}[{i}]", errors, rules)
    elif kind == "string":
        if spec.get("format") in ("int64", "uint64") and isinstance(value, int):
            return
        if "enum" in spec and rules.int_enums and isinstance(value, int) and not isinstance(value, bool):
            if not 0 <= value < len(spec["enum"]):
                errors.append(f"Invalid value at '{where}' ({value}): expected an enum number below {len(spec['enum'])}")
            return
        if not isinstance(value, str):
            errors.append(f"Invalid value at '{where}' ({type(value).__name__}): expected a string")
        elif "enum" in spec and value not in spec["enum"]:
            errors.append(f"Invalid value at '{where}' ({value!r}): expected one of {', '.join(spec['enum'])}")
        elif "pattern" in spec and not re.fullmatch(spec["pattern"], value):
            errors.append(f"Invalid value at '{where}' ({value!r}): does not match {spec['pattern']}")
    elif kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int | str) or not re.fullmatch(r"-?\d+", str(value)):
            errors.append(f"Invalid value at '{where}' ({value!r}): expected an integer")
    elif kind == "boolean":
        if not isinstance(value, bool):
            errors.append(f"Invalid value at '{where}' ({value!r}): expected a boolean")
