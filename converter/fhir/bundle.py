"""Assemble one FHIR Bundle per case from the mapped resources.

Resource ids are already deterministic (UUIDv5 of case id + rule + entity key, set by the engine);
here each resource gets a stable business identifier, the Provenance its targets, and the bundle its
entries in a stable order — as a ``collection``, or a ``transaction`` whose conditional creates let a
server ingest reruns without duplicates.
"""

from __future__ import annotations

import re
import uuid
from functools import cache
from typing import Any

import orjson

from converter.mapping.verbs import NAMESPACE
from converter.resources import schema_path

IDENTIFIER_SYSTEM = "urn:casebridge:resource"
CASE_SYSTEM = "urn:casebridge:case"


@cache
def _identifier_shape() -> dict[str, str]:
    """Per resource type: 'array', 'single' or absent, from the R4 schema subset."""
    path = schema_path("fhir/r4-subset.schema.json")
    defs = orjson.loads(path.read_bytes()).get("definitions", {}) if path.is_file() else {}
    shapes = {}
    for name, node in defs.items():
        ident = node.get("properties", {}).get("identifier")
        if ident is not None:
            shapes[name] = "array" if ident.get("type") == "array" else "single"
    return shapes


@cache
def _type_order() -> dict[str, int]:
    order = orjson.loads(schema_path("fhir-bundle.json").read_bytes())["entry_order"]
    return {name: i for i, name in enumerate(order)}


def business_identifier(case_id: str, resource: dict[str, Any]) -> dict[str, str]:
    """The stable identifier of a resource: the case and the resource's deterministic id."""
    return {"system": IDENTIFIER_SYSTEM, "value": f"{case_id}/{resource['resourceType']}/{resource['id']}"}


def build_bundle(case_id: str, resources: list[dict[str, Any]], bundle_type: str = "collection") -> dict[str, Any]:
    """One Bundle for a case; ``bundle_type`` is ``collection`` or ``transaction``."""
    shapes = _identifier_shape()
    order = _type_order()
    entries = []
    provenance = []
    for index, res in sorted(enumerate(resources), key=lambda p: (order.get(p[1]["resourceType"], len(order)), p[0])):
        rtype = res["resourceType"]
        ident = business_identifier(case_id, res)
        shape = shapes.get(rtype)
        if shape == "array":
            res["identifier"] = [*res.get("identifier", []), ident]
        elif shape == "single" and "identifier" not in res:
            res["identifier"] = ident
        if rtype == "Provenance":
            provenance.append(res)
        entry: dict[str, Any] = {"fullUrl": f"urn:uuid:{res['id']}", "resource": res}
        if bundle_type == "transaction":
            if shape:
                entry["request"] = {"method": "POST", "url": rtype,
                                    "ifNoneExist": f"identifier={ident['system']}|{ident['value']}"}
            else:
                entry["request"] = {"method": "PUT", "url": f"{rtype}/{res['id']}"}
        entries.append(entry)
    targets = [{"reference": e["fullUrl"]} for e in entries if e["resource"]["resourceType"] != "Provenance"]
    for prov in provenance:
        if not prov.get("target"):
            prov["target"] = targets
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid5(NAMESPACE, f"{case_id}|bundle")),
        "identifier": {"system": CASE_SYSTEM, "value": case_id},
        "type": bundle_type,
        "entry": entries,
    }


def ndjson_lines(bundle: dict[str, Any]) -> list[tuple[str, bytes]]:
    """Each resource of a bundle as an NDJSON line, bundle-internal ``urn:uuid:`` references rewritten to ``Type/id``."""
    local = {e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle["entry"]}
    pattern = re.compile(rb'"reference":"(urn:uuid:[0-9a-f-]{36})"')

    def swap(m: re.Match[bytes]) -> bytes:
        target = local.get(m.group(1).decode())
        return b'"reference":"' + target.encode() + b'"' if target else m.group(0)

    return [(e["resource"]["resourceType"], pattern.sub(swap, orjson.dumps(e["resource"])) + b"\n")
            for e in bundle["entry"]]
