"""Structural FHIR R4 check: the generated subset of the official R4 JSON Schema, run by jsonschema_rs.

``schemas/fhir/r4-subset.schema.json`` (written by ``tools/build_fhir_schema.py``) holds the definitions of
the resource types CaseBridge emits. One validator per resource type is compiled on first use and cached
for the life of the process. ``ResourceList`` (the type of nested resources: ``contained``,
``Bundle.entry.resource``, ``Bundle.entry.response.outcome``) is reduced to "an object with a
resourceType": the caller validates each nested resource on its own, against its own type, so an error deep
in a bundle is reported at the entry's resource (``Observation/<id>.component[1].valueQuantity``) instead of
as a ``oneOf`` failure of the whole entry.
"""

from __future__ import annotations

import threading
from functools import cache

import jsonschema_rs
import orjson

from converter.resources import schema_path
from converter.validate.issues import Issue

SUBSET_SCHEMA = "fhir/r4-subset.schema.json"
_DRAFT6 = "http://json-schema.org/draft-06/schema#"
_LOCK = threading.Lock()


@cache
def _definitions() -> tuple[dict, tuple[str, ...]]:
    schema = orjson.loads(schema_path(SUBSET_SCHEMA).read_bytes())
    definitions = dict(schema["definitions"])
    types = tuple(ref["$ref"].rsplit("/", 1)[-1] for ref in definitions["ResourceList"]["oneOf"])
    # Nested resources are validated separately, against their own type (see module docstring).
    definitions["ResourceList"] = {"type": "object", "required": ["resourceType"]}
    return definitions, types


def definitions() -> tuple[dict, tuple[str, ...]]:
    """The subset schema's definitions (``ResourceList`` reduced, see module docstring; shared, do not modify)
    and the supported resource types."""
    return _definitions()


def supported_types() -> tuple[str, ...]:
    """The resource types the subset schema covers (any other type is reported as unsupported)."""
    return _definitions()[1]


_VALIDATORS: dict[str, jsonschema_rs.Validator] = {}


def _validator(resource_type: str) -> jsonschema_rs.Validator:
    validator = _VALIDATORS.get(resource_type)
    if validator is None:
        with _LOCK:
            validator = _VALIDATORS.get(resource_type)
            if validator is None:
                definitions, _ = _definitions()
                validator = jsonschema_rs.Draft6Validator(
                    {"$schema": _DRAFT6, "$ref": f"#/definitions/{resource_type}", "definitions": definitions})
                _VALIDATORS[resource_type] = validator
    return validator


def element_path(parts: list[str | int] | tuple[str | int, ...]) -> str:
    """``['component', 1, 'valueQuantity']`` → ``.component[1].valueQuantity``."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


def resource_label(resource: dict, fallback: str) -> str:
    """``Type/id`` of a resource, or ``fallback`` when it has no id."""
    rid = resource.get("id")
    rtype = resource.get("resourceType", "?")
    return f"{rtype}/{rid}" if isinstance(rid, str) and rid else fallback


def check_structure(resource: object, label: str = "") -> list[Issue]:
    """Schema issues of one resource, not of the resources nested in it (validate those separately)."""
    if not isinstance(resource, dict):
        return [Issue("error", "fhir.schema", f"a resource must be a JSON object, not {type(resource).__name__}",
                      label)]
    rtype = resource.get("resourceType")
    label = label or resource_label(resource, str(rtype))
    if not isinstance(rtype, str):
        return [Issue("error", "fhir.schema", "missing resourceType", label)]
    if rtype not in supported_types():
        return [Issue("error", "fhir.schema.unsupported",
                      f"resource type {rtype} is not supported (schemas/fhir/r4-subset.schema.json covers "
                      f"{', '.join(supported_types())})", label)]
    validator = _validator(rtype)
    if validator.is_valid(resource):
        return []
    issues = []
    for err in validator.iter_errors(resource):
        where = label + element_path(err.instance_path)
        kind = err.kind
        name = getattr(kind, "name", "")
        if name == "additionalProperties":
            for prop in kind.unexpected:
                issues.append(Issue("error", "fhir.schema", f"unknown element {prop!r} (not in FHIR R4 {rtype})",
                                    f"{where}.{prop}"))
        elif name == "required":
            issues.append(Issue("error", "fhir.schema", f"missing required element {kind.property!r}",
                                f"{where}.{kind.property}"))
        else:
            issues.append(Issue("error", "fhir.schema", err.message, where))
    return issues
