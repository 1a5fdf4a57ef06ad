"""The fast path of ``fhir.validate_bundle``: decide cheaply that a bundle has no issue at all.

Almost every bundle CaseBridge writes is valid, and proving that needs no locations or messages. So:

1. one ``jsonschema_rs`` validator checks the whole bundle at once: the R4 structure of every resource
   (nested ones dispatched on ``resourceType``), the base and claimed profile rules of each resource and the
   rules of every extension anywhere (``fhir_profiles.children_schema``: the profile rules as JSON Schema);
2. the bundle serialised once (orjson) is scanned for the codings of checked code systems and for
   references.

Each check is at least as strict as the detailed layers: whatever it cannot decide (a ``_key``-only required
element, a ``#local`` reference, a coding whose ``code`` is not next to its ``system``, an unknown or
versioned ``meta.profile``, ...) counts as "not clean", and the caller then runs the detailed layers, which
alone produce issues. So the fast path changes speed, never results.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Collection, Iterable
from functools import cache

import jsonschema_rs

from converter.validate import fhir_profiles, fhir_schema

_DRAFT2019 = "https://json-schema.org/draft/2019-09/schema"
_LOCK = threading.Lock()
# A key "system" / "code" / "reference" with a string value: in orjson's compact output a quote inside a string
# is always escaped, so these only match real keys. Values with escapes do not match (see the callers).
_SYSTEM = re.compile(rb'"system":"([^"\\]*)"(,"code":"([^"\\]*)")?')
_CODE_BEFORE_SYSTEM = re.compile(rb'"code":"([^"\\]*)",(?="system":")')
_REFERENCE = re.compile(rb'"reference":"([^"\\]*)"')
_REFERENCE_KEY = b'"reference":"'


def _ref(name: str) -> dict:
    return {"$ref": f"#/definitions/{name}"}


def _schema() -> dict:
    """Structure + profiles + extensions of a Bundle as one draft 2019-09 schema (see module docstring)."""
    definitions, types = fhir_schema.definitions()
    ruleset = fhir_profiles.rules()
    definitions = dict(definitions)
    for rtype in types:
        claimable = sorted(url for url, p in ruleset.profiles.items() if p.type == rtype)
        parts: list[object] = [_ref(rtype)]
        base = ruleset.base_by_type.get(rtype)
        if base is not None:
            parts.append(fhir_profiles.profile_schema(base))
        parts.append({"properties": {"meta": {"properties": {"profile": {"items": {"enum": claimable}}}}}})
        for url in claimable:
            claims = {"required": ["meta"], "properties": {"meta": {
                "required": ["profile"], "properties": {"profile": {"contains": {"const": url}}}}}}
            parts.append({"if": claims, "then": fhir_profiles.profile_schema(ruleset.profiles[url])})
        definitions[f"cb-resource-{rtype}"] = {"allOf": parts}
    definitions["ResourceList"] = {
        "type": "object", "required": ["resourceType"], "properties": {"resourceType": {"enum": list(types)}},
        "allOf": [{"if": {"properties": {"resourceType": {"const": t}}}, "then": _ref(f"cb-resource-{t}")}
                  for t in types]}
    extension: list[object] = []
    if ruleset.extension_base is not None:
        extension.append(fhir_profiles.profile_schema(ruleset.extension_base))
    for url, profile in sorted(ruleset.profiles.items()):
        if profile.type == "Extension" and not profile.base:
            extension.append({"if": {"required": ["url"], "properties": {"url": {"const": url}}},
                              "then": fhir_profiles.profile_schema(profile)})
    definitions["cb-extension"] = {"allOf": extension}
    definitions["Extension"] = {"allOf": [definitions["Extension"], _ref("cb-extension")]}
    roots: list[object] = [_ref("cb-resource-Bundle")]
    if not _extensions_typed(definitions):
        # some object may hold extensions the R4 definitions do not type: check extensions anywhere
        definitions["cb-extensions"] = {"allOf": [_ref("cb-anywhere"), {"items": _ref("cb-extension")}]}
        definitions["cb-anywhere"] = {
            "properties": {"extension": _ref("cb-extensions"), "modifierExtension": _ref("cb-extensions")},
            "additionalProperties": _ref("cb-anywhere"), "items": _ref("cb-anywhere")}
        roots.append(_ref("cb-anywhere"))
    return {"$schema": _DRAFT2019, "definitions": definitions, "allOf": roots}


def _extensions_typed(definitions: dict) -> bool:
    """True when a structurally valid resource holds extensions only where the R4 definitions type them.

    That is when every object definition closes its properties and types its ``extension`` /
    ``modifierExtension`` as lists of ``Extension``: then the ``Extension`` definition sees every extension
    ``fhir._scan`` would find, and the extension rules can ride on it.
    """
    typed = {"type": "array", "items": {"$ref": "#/definitions/Extension"}}
    for name, definition in definitions.items():
        if name.startswith("cb-") or name in ("ResourceList", "Extension") or "properties" not in definition:
            continue
        if definition.get("additionalProperties") is not False:
            return False
        props = definition["properties"]
        if any(key in props and props[key] != typed for key in ("extension", "modifierExtension")):
            return False
    return True


@cache
def _validator() -> jsonschema_rs.Validator:
    with _LOCK:
        return jsonschema_rs.Draft201909Validator(_schema())


def precompile() -> None:
    """Build and compile the bundle validator now."""
    _validator()


def structure_clean(bundle: dict) -> bool:
    """True only when the structure, profile and extension layers would report nothing for ``bundle``."""
    try:
        return _validator().is_valid(bundle)
    except Exception:  # noqa: BLE001 - e.g. a value JSON cannot hold: the detailed layers report (or raise) it
        return False


def codes_clean(text: bytes, checked: Collection[bytes], known: Iterable[Collection[tuple[str, str]]]) -> bool:
    """True only when every coding of a ``checked`` system in ``text`` (the bundle as orjson) is in one of the
    ``known`` sets of (system, code) (``Terminology.known_code`` over its tables)."""
    pairs: set[tuple[bytes, bytes]] = set()
    for system, adjacent, code in _SYSTEM.findall(text):
        if system in checked:
            if not adjacent:
                return _codes_clean_anywhere(text, checked, known)
            pairs.add((system, code))
    return _all_known({(system.decode(), code.decode()) for system, code in pairs}, known)


def _all_known(pairs: set[tuple[str, str]], known: Iterable[Collection[tuple[str, str]]]) -> bool:
    for codes in known:
        if not pairs:
            break
        pairs.difference_update(codes)
    return not pairs


def _codes_clean_anywhere(text: bytes, checked: Collection[bytes], known: Iterable[Collection[tuple[str, str]]]) -> bool:
    """``codes_clean`` when some coding has its ``code`` just before its ``system`` (or none next to it)."""
    before = {m.end(): m.group(1) for m in _CODE_BEFORE_SYSTEM.finditer(text)}
    pairs: set[tuple[str, str]] = set()
    for m in _SYSTEM.finditer(text):
        system = m.group(1)
        if system not in checked:
            continue
        code = m.group(3) if m.group(2) else before.get(m.start())
        if code is None:
            return False
        pairs.add((system.decode(), code.decode()))
    return _all_known(pairs, known)


def references(text: bytes) -> set[str] | None:
    """Every string ``reference`` in ``text`` (the bundle as orjson); None when one is ``#local`` or escaped."""
    found = _REFERENCE.findall(text)
    if len(found) != text.count(_REFERENCE_KEY):  # a value with an escape
        return None
    refs = set(found)
    if any(ref.startswith(b"#") for ref in refs):
        return None
    return {ref.decode() for ref in refs}
