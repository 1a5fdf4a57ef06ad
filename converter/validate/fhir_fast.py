"""The fast path of ``fhir.validate_bundle``: decide cheaply that a bundle has no issue at all.

Almost every bundle CaseBridge writes is valid, and proving that needs no locations or messages. So:

1. one ``jsonschema_rs`` call checks the whole bundle: the R4 structure of every resource, the base and
   claimed profile rules of each (``fhir_profiles.children_schema``: the profile rules as JSON Schema) and
   the rules of every extension. The entries' resources are handed over grouped by (type, claimed profile),
   so the validator knows each one's rules without looking at ``meta.profile``;
2. the bundle serialised once (orjson) is scanned for references (each must resolve to an entry) and for the
   codings of checked code systems (each must be in the terminology tables).

Each check is at least as strict as the detailed layers: whatever it cannot decide (a ``#local`` reference,
a coding whose ``code`` is not next to its ``system``, an unknown, versioned or second ``meta.profile``, a
bundle inside the bundle, ...) counts as "not clean", and the caller then runs the detailed layers, which
alone produce issues. So the fast path changes speed, never results (``tests/test_fhir_validate.py`` checks
that on mutated bundles).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from functools import cache, lru_cache

import jsonschema_rs

from converter.validate import fhir_profiles, fhir_schema

_DRAFT2019 = "https://json-schema.org/draft/2019-09/schema"
_LOCK = threading.Lock()
# A key "system" / "code" / "reference" with a string value: in orjson's compact output a quote inside a string
# is always escaped, so these only match real keys. Values with escapes do not match (see the callers).
# A checked system URL has no character JSON escapes, so every coding of one is found.
_SYSTEM = re.compile(rb'"system":"([^"\\]*)"(,"code":"([^"\\]*)")?')
_CODE_BEFORE_SYSTEM = re.compile(rb'"code":"([^"\\]*)",(?="system":")')
_REFERENCE_KEY = b'"reference":"'


def _ref(name: str) -> dict:
    return {"$ref": f"#/definitions/{name}"}


def _by_url(defined: list[tuple[str, object]]) -> object:
    """The schema of the extension definition named by ``url`` (a binary search on ``url``; none: ``true``)."""
    if len(defined) == 1:
        url, schema = defined[0]
        return {"if": {"properties": {"url": {"const": url}}}, "then": schema}
    if not defined:
        return True
    half = len(defined) // 2
    return {"if": {"properties": {"url": {"enum": [url for url, _ in defined[:half]]}}},
            "then": _by_url(defined[:half]), "else": _by_url(defined[half:])}


def _shallow(node: object, renamed: dict[str, str]) -> object:
    """``node`` with its ``$ref``s to the ``renamed`` definitions redirected."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.rsplit("/", 1)[-1] in renamed:
            return _ref(renamed[ref.rsplit("/", 1)[-1]])
        return {k: _shallow(v, renamed) for k, v in node.items()}
    if isinstance(node, list):
        return [_shallow(v, renamed) for v in node]
    return node


def _schema() -> tuple[dict, dict[tuple[str, str], str]]:
    """Structure + profiles + extensions of a Bundle as one draft 2019-09 schema (see module docstring).

    The instance it validates is ``_groups(bundle)``: the bundle under ``cb-root`` (its own structure and
    rules, its entries' resources only as "an object with a resourceType"), and every entry resource (and
    ``response.outcome``) under the name of its (type, claimed profile) pair, whose rules are known without a
    look at ``meta.profile``; any other resource (several profiles, an unknown one, ...) under ``cb-any``,
    where its type and ``meta.profile`` pick the rules. Returns the schema and the (type, profile URL or "")
    → group name map.
    """
    definitions, types = fhir_schema.definitions()
    ruleset = fhir_profiles.rules()
    definitions = dict(definitions)
    for name, definition in list(definitions.items()):
        if name != "ResourceList" and _untyped(definition):
            # e.g. xhtml ({}): an object there could hide extensions from the Extension definition
            definitions[name] = {"allOf": [definition], "not": _NOT_SCALAR}
    groups: dict[tuple[str, str], str] = {}
    profile_refs: dict[str, dict] = {}   # each profile's schema is one definition, referred to where it applies
    for i, (url, profile) in enumerate(sorted(ruleset.profiles.items())):
        definitions[f"cb-profile-{i}"] = fhir_profiles.profile_schema(profile)
        profile_refs[url] = _ref(f"cb-profile-{i}")
    for rtype in types:
        claimable = sorted(url for url, p in ruleset.profiles.items() if p.type == rtype)
        base = ruleset.base_by_type.get(rtype)
        own = [profile_refs[base.url]] if base is not None else []
        parts: list[object] = list(own)
        parts.append({"properties": {"meta": {"properties": {"profile": {"items": {"enum": claimable}}}}}})
        for url in claimable:
            claims = {"required": ["meta"], "properties": {"meta": {
                "required": ["profile"], "properties": {"profile": {"contains": {"const": url}}}}}}
            parts.append({"if": claims, "then": profile_refs[url]})
        definitions[f"cb-resource-{rtype}"] = {"allOf": [_ref(rtype), *parts]}
        definitions[f"cb-rules-{rtype}"] = {"allOf": parts}
        for url in ["", *claimable]:
            name = groups[(rtype, url)] = f"cb-group-{len(groups)}"
            definitions[name] = {"allOf": [_ref(rtype), *own, *([profile_refs[url]] if url else [])]}
    definitions["ResourceList"] = {
        "type": "object", "required": ["resourceType"], "properties": {"resourceType": {"enum": list(types)}},
        "allOf": [{"if": {"properties": {"resourceType": {"const": t}}}, "then": _ref(f"cb-resource-{t}")}
                  for t in types]}
    extension: list[object] = []
    if ruleset.extension_base is not None:
        extension.append(profile_refs[ruleset.extension_base.url])
    defined = sorted((url, profile_refs[url]) for url, p in ruleset.profiles.items()
                     if p.type == "Extension" and not p.base)
    extension.append(_by_url(defined))
    definitions["cb-extension"] = {"allOf": extension}
    definitions["Extension"] = {"allOf": [definitions["Extension"], _ref("cb-extension")]}
    # the root bundle's own structure: nested resources are checked in their groups
    shallow = {name: f"cb-shallow-{name}" for name in ("Bundle", "Bundle_Entry", "Bundle_Response")}
    for name, renamed in shallow.items():
        definitions[renamed] = _shallow(definitions[name], {**shallow, "ResourceList": "cb-nested"})
    definitions["cb-nested"] = {"type": "object", "required": ["resourceType"]}
    root: list[object] = [_ref("cb-shallow-Bundle"), _ref("cb-rules-Bundle")]
    if not _extensions_typed(definitions):
        # some object may hold extensions the R4 definitions do not type: check extensions anywhere
        definitions["cb-extensions"] = {"allOf": [_ref("cb-anywhere"), {"items": _ref("cb-extension")}]}
        definitions["cb-anywhere"] = {
            "properties": {"extension": _ref("cb-extensions"), "modifierExtension": _ref("cb-extensions")},
            "additionalProperties": _ref("cb-anywhere"), "items": _ref("cb-anywhere")}
        root.append(_ref("cb-anywhere"))
    definitions["cb-root"] = {"allOf": root}
    members = {name: {"items": _ref(name)} for name in groups.values()}
    members |= {"cb-root": {"items": _ref("cb-root")}, "cb-any": {"items": _ref("ResourceList")}}
    schema = {"$schema": _DRAFT2019, "definitions": definitions, "type": "object", "properties": members,
              "additionalProperties": False}
    return schema, groups


_SCALAR = {"string", "number", "integer", "boolean", "null"}
_NOT_SCALAR = {"type": ["object", "array"]}


def _untyped(definition: dict) -> bool:
    """A definition without properties that does not restrict its values to JSON scalars."""
    return ("properties" not in definition and definition.get("type") not in _SCALAR
            and definition.get("not") != _NOT_SCALAR)


def _scalar_or_ref(schema: dict) -> bool:
    """A property schema whose values are scalars, or objects validated by a definition."""
    if "$ref" in schema:
        return True
    if schema.get("type") == "array":
        return _scalar_or_ref(schema.get("items", {}))
    if "enum" in schema or "const" in schema:
        values = schema.get("enum", [schema.get("const")])
        return not any(isinstance(v, (dict, list)) for v in values)
    return schema.get("type") in _SCALAR


def _extensions_typed(definitions: dict) -> bool:
    """True when a structurally valid resource holds extensions only where the R4 definitions type them.

    That is when every object definition closes its properties, gives each a scalar type or a definition,
    and types its ``extension`` / ``modifierExtension`` as lists of ``Extension``, and no other definition
    admits objects: then the ``Extension`` definition sees every extension ``fhir._scan`` would find, and the
    extension rules can ride on it.
    """
    typed = {"type": "array", "items": {"$ref": "#/definitions/Extension"}}
    for name, definition in definitions.items():
        if name.startswith("cb-") or name in ("ResourceList", "Extension"):
            continue
        if "properties" not in definition:
            if _untyped(definition):
                return False
            continue
        if definition.get("additionalProperties") is not False:
            return False
        props = definition["properties"]
        if any(key in props and props[key] != typed for key in ("extension", "modifierExtension")):
            return False
        if not all(_scalar_or_ref(schema) for schema in props.values()):
            return False
    return True


@cache
def _compiled() -> tuple[jsonschema_rs.Validator, dict[tuple[str, str], str]]:
    with _LOCK:
        schema, groups = _schema()
        return jsonschema_rs.Draft201909Validator(schema), groups


def precompile() -> None:
    """Build and compile the bundle validator now."""
    _compiled()


@dataclass(slots=True)
class Entries:
    """A bundle's resources grouped for the validator (see ``_schema``), and the entries' fullUrls."""

    groups: dict[str, list[dict]]
    full_urls: set[str]   # as fhir._bundle_index


def entries(bundle: dict) -> Entries | None:
    """Group the bundle's entries; None when the fast path does not apply (a bundle inside the bundle)."""
    names = _compiled()[1]
    found = Entries({"cb-root": [bundle]}, set())
    groups = found.groups
    try:
        for entry in bundle.get("entry") or ():
            if not isinstance(entry, dict):
                continue
            url = entry.get("fullUrl")
            if isinstance(url, str):
                found.full_urls.add(url)
            resource = entry.get("resource")
            response = entry.get("response")
            outcome = response.get("outcome") if isinstance(response, dict) else None
            if isinstance(resource, dict):
                rtype = resource.get("resourceType")
                if rtype == "Bundle":
                    return None
            for item in (resource, outcome):
                if isinstance(item, dict):
                    meta = item.get("meta")
                    claimed = meta.get("profile") if isinstance(meta, dict) else None
                    if not claimed:
                        name = names.get((item.get("resourceType"), ""), "cb-any")
                    elif isinstance(claimed, list) and len(claimed) == 1:
                        name = names.get((item.get("resourceType"), claimed[0]), "cb-any")
                    else:
                        name = "cb-any"
                    if name in groups:
                        groups[name].append(item)
                    else:
                        groups[name] = [item]
    except Exception:  # noqa: BLE001 - e.g. entries that are not a list: the detailed layers report (or raise) it
        return None
    return found


def structure_clean(found: Entries) -> bool:
    """True only when the structure, profile and extension layers would report nothing for the bundle."""
    try:
        return _compiled()[0].is_valid(found.groups)
    except Exception:  # noqa: BLE001 - e.g. a value JSON cannot hold: the detailed layers report (or raise) it
        return False


@lru_cache(maxsize=4)
def _checked_system(checked: frozenset[bytes]) -> re.Pattern[bytes]:
    """Like ``_SYSTEM``, for the ``checked`` systems only (fewer matches to look at)."""
    systems = b"|".join(re.escape(system) for system in sorted(checked))
    return re.compile(rb'"system":"(' + systems + rb')"(,"code":"([^"\\]*)")?')


def codings(text: bytes, checked: frozenset[bytes]) -> set[tuple[str, str]] | None:
    """The (system, code) of every coding of a ``checked`` system in ``text`` (the bundle as orjson); None
    when one's ``code`` is not a plain string right before or after its ``system``."""
    if not checked:
        return set()
    found = set(_checked_system(checked).findall(text))   # (system, ',"code":"…"' or b"", code), each once
    for _, adjacent, _ in found:
        if not adjacent:
            return _codings_anywhere(text, checked)
    return {(system.decode(), code.decode()) for system, _, code in found}


def _codings_anywhere(text: bytes, checked: frozenset[bytes]) -> set[tuple[str, str]] | None:
    """``codings`` when some coding has its ``code`` just before its ``system`` (or none next to it)."""
    before = {m.end(): m.group(1) for m in _CODE_BEFORE_SYSTEM.finditer(text)}
    pairs: set[tuple[str, str]] = set()
    for m in _SYSTEM.finditer(text):
        system = m.group(1)
        if system not in checked:
            continue
        code = m.group(3) if m.group(2) else before.get(m.start())
        if code is None:
            return None
        pairs.add((system.decode(), code.decode()))
    return pairs


def references(text: bytes) -> set[str] | None:
    """Every string ``reference`` in ``text`` (the bundle as orjson); None when one is ``#local`` or escaped."""
    refs = {part[:part.find(b'"')] for part in text.split(_REFERENCE_KEY)[1:]}
    if not refs:
        return set()
    joined = b'"'.join(refs)  # no reference holds a quote: each was cut at its first one
    if b"\\" in joined or joined.startswith(b"#") or b'"#' in joined:
        return None
    return set(joined.decode().split('"'))
