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


def build_bundle(case_id: str, resources: list[dict[str, Any]], bundle_type: str = "collection") -> dict[str, Any]:
    """One Bundle for a case; ``bundle_type`` is ``collection`` or ``transaction``.

    Entries are ordered by resource type (``fhir-bundle.json`` ``entry_order``), then as mapped. A resource
    whose type has an identifier gets its business identifier ``<case id>/<type>/<id>`` (system
    ``IDENTIFIER_SYSTEM``); a Provenance without a target gets every other entry."""
    shapes = _identifier_shape()
    order = _type_order()
    last = len(order)
    by_rank: dict[int, list[dict[str, Any]]] = {}  # resources by the rank of their type, each in mapping order
    for res in resources:
        rank = order.get(res["resourceType"], last)
        same = by_rank.get(rank)
        if same is None:
            by_rank[rank] = [res]
        else:
            same.append(res)
    transaction = bundle_type == "transaction"
    entries: list[dict[str, Any]] = []
    targets: list[dict[str, str]] = []
    provenance: list[dict[str, Any]] = []
    for rank in sorted(by_rank):
        for res in by_rank[rank]:
            rtype = res["resourceType"]
            shape = shapes.get(rtype)
            prefix = f"{case_id}/{rtype}/"
            rid = res["id"]
            url = "urn:uuid:" + rid
            if shape is not None:
                ident = {"system": IDENTIFIER_SYSTEM, "value": prefix + rid}
                if shape == "array":
                    res["identifier"] = [*res.get("identifier", []), ident]
                elif "identifier" not in res:
                    res["identifier"] = ident
            if rtype == "Provenance":
                provenance.append(res)
            else:
                targets.append({"reference": url})
            if transaction:
                request = ({"method": "POST", "url": rtype,
                            "ifNoneExist": f"identifier={IDENTIFIER_SYSTEM}|{prefix}{rid}"} if shape else
                           {"method": "PUT", "url": f"{rtype}/{rid}"})
                entries.append({"fullUrl": url, "resource": res, "request": request})
            else:
                entries.append({"fullUrl": url, "resource": res})
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
