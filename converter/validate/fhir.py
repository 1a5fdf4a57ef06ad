"""FHIR output validation: structure, profile rules, codes, references (and, on request, R4B models).

Layers (docs/fhir-validation.md tells what each checks and what it does not):

1. structure — the R4 JSON Schema subset (``fhir_schema``), rule ids ``fhir.schema``, ``fhir.schema.unsupported``;
2. profiles — base R4 rules of the type, the rules of each ``meta.profile``, extension definitions
   (``fhir_profiles``), rule ids ``fhir.profile.*``;
3. codes — each Coding of an external code system listed in ``schemas/fhir/code-systems.json`` must be
   known to the project's terminology tables, rule id ``fhir.code.unknown``;
4. references — each ``reference`` resolves inside the bundle (or to a contained resource),
   rule id ``fhir.reference.unresolved``;
5. deep (``validate_bundle(..., deep=True)``) — each resource parsed by the ``fhir.resources`` R4B models,
   rule id ``fhir.model``.

Everything (schemas, rules, code-system list, default terminology) is loaded and compiled once per process;
call ``precompile()`` at start-up to pay the cost of the common path (clean bundles) before the first case.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Iterator

import orjson

from converter.mapping.terminology import Terminology, load_terminology
from converter.resources import mappings_dir, schema_path
from converter.validate import fhir_fast, fhir_profiles, fhir_schema
from converter.validate.fhir_schema import element_path, resource_label
from converter.validate.issues import Issue

CODE_SYSTEMS_FILE = "fhir/code-systems.json"
_RELATIVE_REF = re.compile(r"^[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}$")
_EXTENSION_KEYS = ("extension", "modifierExtension")
# R4 (4.0.1) content that the R4B models reject: (pydantic error type, last element of its location).
# Extension.valueMeta is an R4 4.0.1 open type that R4B dropped.
_R4B_ONLY_ERRORS = frozenset({("extra_forbidden", "valueMeta")})


@cache
def checked_code_systems() -> dict[str, str]:
    """System URL → name of the external code systems whose codes must be in the terminology tables."""
    data = orjson.loads(schema_path(CODE_SYSTEMS_FILE).read_bytes())
    return {url: spec["name"] for url, spec in data["systems"].items() if spec.get("check")}


@cache
def _checked_systems_utf8() -> frozenset[bytes]:
    """``checked_code_systems`` as they appear in orjson output."""
    return frozenset(url.encode() for url in checked_code_systems())


@cache
def _default_terminology() -> Terminology:
    return load_terminology(mappings_dir() / "terminology")


def precompile() -> None:
    """Compile what every bundle needs now: the profile rules, the fast path's validator, the code-system list.

    The detailed layers' per-type validators (``fhir_schema``) and the default terminology (callers such as
    the pipeline pass their own) are loaded on first use: a run of clean bundles never needs them.
    """
    fhir_profiles.rules()
    fhir_fast.precompile()
    _checked_systems_utf8()


@dataclass(slots=True)
class _Found:
    """What one pass over a resource collects."""

    extensions: list[tuple[dict, str]] = field(default_factory=list)
    codings: list[tuple[dict, str]] = field(default_factory=list)
    references: list[tuple[str, str]] = field(default_factory=list)


def _scan(obj: dict, loc: str, found: _Found) -> None:
    """Collect extensions, codings and references of ``obj``, not entering nested resources."""
    if "code" in obj and "system" in obj:
        found.codings.append((obj, loc))
    for key, value in obj.items():
        if isinstance(value, dict):
            if "resourceType" not in value:
                _scan(value, f"{loc}.{key}", found)
        elif isinstance(value, list):
            is_ext = key in _EXTENSION_KEYS
            for i, item in enumerate(value):
                if isinstance(item, dict) and "resourceType" not in item:
                    where = f"{loc}.{key}[{i}]"
                    if is_ext:
                        found.extensions.append((item, where))
                    _scan(item, where, found)
        elif key == "reference" and isinstance(value, str):
            found.references.append((value, f"{loc}.reference"))


@dataclass(slots=True)
class _Entry:
    resource: dict
    label: str
    local_ids: frozenset[str]   # ids of the contained resources a "#id" reference may point to


def _walk(resource: dict, label: str, local_ids: frozenset[str] | None = None) -> Iterator[_Entry]:
    """The resource and every resource nested in it (contained, bundle entries), each with its label."""
    contained = [c for c in resource.get("contained") or () if isinstance(c, dict)]
    own_ids = frozenset(str(c.get("id")) for c in contained if c.get("id"))
    yield _Entry(resource, label, own_ids if local_ids is None else local_ids)
    for i, item in enumerate(resource.get("contained") or ()):
        if isinstance(item, dict):
            yield from _walk(item, f"{label}.contained[{i}]", own_ids)
    if resource.get("resourceType") == "Bundle":
        for i, entry in enumerate(resource.get("entry") or ()):
            if not isinstance(entry, dict):
                continue
            inner = entry.get("resource")
            if isinstance(inner, dict):
                yield from _walk(inner, resource_label(inner, f"{label}.entry[{i}].resource"))
            response = entry.get("response")
            outcome = response.get("outcome") if isinstance(response, dict) else None
            if isinstance(outcome, dict):
                yield from _walk(outcome, f"{label}.entry[{i}].response.outcome")


def _bundle_index(bundle: dict) -> tuple[set[str], set[str]]:
    """fullUrls and ``Type/id`` of every entry (nested bundles included)."""
    full_urls: set[str] = set()
    typed: set[str] = set()
    stack = [bundle]
    while stack:
        current = stack.pop()
        for entry in current.get("entry") or ():
            if not isinstance(entry, dict):
                continue
            if isinstance(entry.get("fullUrl"), str):
                full_urls.add(entry["fullUrl"])
            inner = entry.get("resource")
            if isinstance(inner, dict):
                if isinstance(inner.get("id"), str):
                    typed.add(f"{inner.get('resourceType')}/{inner['id']}")
                if inner.get("resourceType") == "Bundle":
                    stack.append(inner)
    return full_urls, typed


def _resolves(ref: str, local_ids: frozenset[str], full_urls: set[str], typed: set[str]) -> bool:
    if ref.startswith("#"):
        return ref == "#" or ref[1:] in local_ids
    target = ref.split("/_history/", 1)[0]
    if ref in full_urls or target in full_urls:
        return True
    return bool(_RELATIVE_REF.match(target)) and target in typed


def _check_codes(found: _Found, terminology: Terminology, issues: list[Issue]) -> None:
    systems = checked_code_systems()
    for coding, where in found.codings:
        system = coding.get("system")
        if system not in systems:
            continue
        code = coding.get("code")
        if not isinstance(code, str) or not terminology.known_code(system, code):
            display = f" ({coding['display']})" if isinstance(coding.get("display"), str) else ""
            issues.append(Issue("error", "fhir.code.unknown",
                                f"{systems[system]} code {code!r}{display} is not in the project's terminology "
                                f"tables (mappings/terminology)", where))


def _dedupe(issues: list[Issue]) -> list[Issue]:
    seen: set[tuple[str, str]] = set()
    out = []
    for issue in issues:
        key = (issue.rule, issue.location)
        if key not in seen:
            seen.add(key)
            out.append(issue)
    return out


def _validate(root: dict, terminology: Terminology | None, resolve_all: bool,
              collect: list[tuple[str, str]] | None = None) -> list[Issue]:
    """The default layers over ``root`` and its nested resources.

    ``resolve_all``: references that are not ``#local`` must resolve to a bundle entry; otherwise only local
    references are checked, and the others are appended to ``collect`` (when given) for the caller to resolve.
    """
    terminology = terminology if terminology is not None else _default_terminology()
    full_urls, typed = _bundle_index(root) if root.get("resourceType") == "Bundle" else (set(), set())
    issues: list[Issue] = []
    for item in _walk(root, resource_label(root, str(root.get("resourceType", "?")))):
        resource, label = item.resource, item.label
        own = fhir_schema.check_structure(resource, label)
        own += fhir_profiles.check_profiles(resource, label)
        found = _Found()
        _scan(resource, label, found)
        for extension, where in found.extensions:
            own += fhir_profiles.check_extension(extension, where)
        _check_codes(found, terminology, own)
        for ref, where in found.references:
            if ref.startswith("#") or resolve_all:
                if not _resolves(ref, item.local_ids, full_urls, typed):
                    own.append(Issue("error", "fhir.reference.unresolved",
                                     f"reference {ref!r} does not resolve to "
                                     + ("a contained resource" if ref.startswith("#") else "an entry of the bundle"),
                                     where))
            elif collect is not None:
                collect.append((ref, where))
        issues.extend(_dedupe(own))
    return issues


def _clean(bundle: dict, terminology: Terminology | None) -> bool:
    """True when the fast path (``fhir_fast``) proves that ``_validate`` would report nothing for ``bundle``."""
    found = fhir_fast.entries(bundle)
    if found is None or not fhir_fast.structure_clean(found):
        return False
    try:
        text = orjson.dumps(bundle)
    except TypeError:  # orjson.JSONEncodeError, e.g. an integer beyond 64 bits
        return False
    refs = fhir_fast.references(text)
    if refs is None:
        return False
    unresolved = refs - found.full_urls   # usually none: references point at fullUrls
    if unresolved:
        typed = _bundle_index(bundle)[1]   # the top level only: entries() found no bundle inside
        if not all(_resolves(ref, frozenset(), found.full_urls, typed) for ref in unresolved):
            return False
    pairs = fhir_fast.codings(text, _checked_systems_utf8())
    return pairs is not None and _all_known(pairs, terminology if terminology is not None else _default_terminology())


def _all_known(pairs: set[tuple[str, str]], terminology: Terminology) -> bool:
    """``terminology.known_code`` for every (system, code) of ``pairs`` (set operations on its tables)."""
    if type(terminology) is not Terminology:  # a subclass may know codes otherwise
        return all(terminology.known_code(system, code) for system, code in pairs)
    for table in terminology.tables.values():
        if not pairs:
            break
        pairs = pairs - table.codes
    return not pairs


def validate_resource(resource: dict, terminology: Terminology | None = None) -> list[Issue]:
    """Structure, profile, code and local-reference issues of one resource (and its contained resources).

    ``terminology`` defaults to the project's tables (``mappings/terminology``). Only ``#id`` references are
    resolved here (a lone resource has nothing else to resolve against); a Bundle is checked as by
    ``validate_bundle``.
    """
    if not isinstance(resource, dict):
        return fhir_schema.check_structure(resource)
    return _validate(resource, terminology, resolve_all=resource.get("resourceType") == "Bundle")


def validate_bundle(bundle: dict, terminology: Terminology | None = None, deep: bool = False) -> list[Issue]:
    """All issues of a Bundle: its entries' structure, profiles, codes, and references between entries.

    ``deep=True`` also parses every resource with the ``fhir.resources`` R4B models (slow; see
    ``check_models``).
    """
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        got = bundle.get("resourceType") if isinstance(bundle, dict) else type(bundle).__name__
        return [Issue("error", "fhir.schema", f"expected a Bundle, got {got}", "")]
    issues = [] if _clean(bundle, terminology) else _validate(bundle, terminology, resolve_all=True)
    if deep:
        issues.extend(check_models(bundle))
    return issues


def _shell(resource: dict) -> dict:
    """The resource without its nested resources (those are parsed on their own)."""
    shell = {k: v for k, v in resource.items() if k != "contained"}
    if resource.get("resourceType") == "Bundle" and isinstance(resource.get("entry"), list):
        entries = []
        for entry in resource["entry"]:
            if isinstance(entry, dict):
                entry = {k: v for k, v in entry.items() if k != "resource"}
                if isinstance(entry.get("response"), dict):
                    entry["response"] = {k: v for k, v in entry["response"].items() if k != "outcome"}
            entries.append(entry)
        shell["entry"] = entries
    return shell


def check_models(resource: dict) -> list[Issue]:
    """Parse ``resource`` and every nested resource with the ``fhir.resources`` R4B models.

    fhir.resources 8.x ships no R4 models; R4B is the closest. Errors that only reflect R4→R4B differences
    (``_R4B_ONLY_ERRORS``) are not reported; docs/fhir-validation.md lists the differences.
    """
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    issues: list[Issue] = []
    for item in _walk(resource, resource_label(resource, str(resource.get("resourceType", "?")))):
        rtype = item.resource.get("resourceType")
        try:
            model = get_fhir_model_class(str(rtype))
        except KeyError:
            issues.append(Issue("error", "fhir.model", f"no R4B model for resource type {rtype!r}", item.label))
            continue
        try:
            model.model_validate(_shell(item.resource))
        except ValidationError as exc:
            for err in exc.errors():
                loc = tuple(err["loc"])
                if (err["type"], loc[-1] if loc else "") in _R4B_ONLY_ERRORS:
                    continue
                issues.append(Issue("error", "fhir.model", f"R4B model: {err['msg']}",
                                    item.label + element_path(loc)))
    return issues


def validate_ndjson(path: str | Path, terminology: Terminology | None = None) -> list[Issue]:
    """Validate a bulk-data NDJSON file (one resource per line) or a folder of ``*.ndjson`` files.

    Each resource gets the default layers; ``Type/id`` references are resolved across all the files read.
    Lines that are not JSON are reported as ``fhir.ndjson`` at ``file:line``.
    """
    path = Path(path)
    if not path.exists():
        return [Issue("error", "fhir.ndjson", "no such file or folder", str(path))]
    files = sorted(path.glob("*.ndjson")) if path.is_dir() else [path]
    issues: list[Issue] = []
    pending: list[tuple[str, str]] = []
    known: set[str] = set()
    for file in files:
        with file.open("rb") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    resource = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    issues.append(Issue("error", "fhir.ndjson", f"not JSON: {exc}", f"{file}:{lineno}"))
                    continue
                if not isinstance(resource, dict):
                    issues.append(Issue("error", "fhir.ndjson", "a line must hold one JSON object",
                                        f"{file}:{lineno}"))
                    continue
                if isinstance(resource.get("id"), str):
                    known.add(f"{resource.get('resourceType')}/{resource['id']}")
                here = f"{file}:{lineno}"
                start = len(pending)
                if resource.get("resourceType") == "Bundle":
                    found = _validate(resource, terminology, resolve_all=True)
                else:
                    found = _validate(resource, terminology, resolve_all=False, collect=pending)
                issues.extend(Issue(i.severity, i.rule, i.message, f"{here}: {i.location}") for i in found)
                pending[start:] = [(ref, f"{here}: {where}") for ref, where in pending[start:]]
    for ref, where in pending:
        target = ref.split("/_history/", 1)[0]
        if target not in known:
            issues.append(Issue("error", "fhir.reference.unresolved",
                                f"reference {ref!r} does not resolve to a resource of the NDJSON input", where))
    return issues
