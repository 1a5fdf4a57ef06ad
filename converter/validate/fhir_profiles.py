"""Profile rules as data: ``schemas/fhir/profile-rules.json`` (written by ``tools/build_profile_rules.py``).

The rules file holds, per StructureDefinition URL, a tree of the elements that carry a checked constraint
(cardinality, fixed/pattern value, required binding with enumerated codes, narrowed choice types, slices with
their membership patterns). This module compiles it once into small immutable objects and walks resources
with them; nothing here knows any particular profile.

Which rules apply to a resource: the FHIR R4 base rules of its type, plus the rules of every profile in
``meta.profile``. Extension rules are applied to every extension found anywhere in a resource: the R4
``Extension`` base rules, plus the rules of the extension definition named by its ``url`` when known.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import orjson

from converter.resources import schema_path
from converter.validate.issues import Issue

RULES_FILE = "fhir/profile-rules.json"
EXTENSION_BASE = "http://hl7.org/fhir/StructureDefinition/Extension"
_ABSENT = object()


@dataclass(frozen=True, slots=True)
class Rule:
    """The constraints on one element (or one slice) of a profile."""

    id: str
    label: str
    keys: tuple[str, ...]
    key_of: dict[str, str] | None   # for choice elements: JSON key or "_key" -> key (scanned via the object)
    min: int
    max: int | None
    fixed: object
    pattern: object
    codes: frozenset[tuple[str, str]] | None
    code_values: frozenset[str]
    value_set: str
    forbidden: frozenset[str]        # JSON keys (and "_key"s) of choice types the profile removed
    children: tuple[Rule, ...]
    slices: tuple[Slice, ...]


@dataclass(frozen=True, slots=True)
class Slice:
    """A slice: the items matching every (path, value) pair of ``match`` are checked against ``rule``."""

    name: str
    match: tuple[tuple[tuple[str, ...], object], ...]
    rule: Rule


@dataclass(frozen=True, slots=True)
class Profile:
    """One StructureDefinition's compiled rules."""

    url: str
    id: str
    type: str
    base: bool
    title: str
    children: tuple[Rule, ...]


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Every compiled profile, indexed the ways the validator looks them up."""

    profiles: dict[str, Profile]
    base_by_type: dict[str, Profile]
    extension_base: Profile | None


def _compile_rule(node: dict, valuesets: dict, choices: dict, keys: tuple[str, ...] = ()) -> Rule:
    keys = tuple(node.get("keys", keys))
    last = node["id"].rsplit(".", 1)[-1]
    name, _, slice_name = last.partition(":")
    label = slice_name if slice_name and name.endswith("[x]") else last
    codes = None
    code_values: frozenset[str] = frozenset()
    value_set = ""
    if "binding" in node:
        value_set = node["binding"]["valueSet"]
        pairs = [tuple(c) for c in valuesets[value_set]["codes"]]
        codes = frozenset(pairs)
        code_values = frozenset(code for _, code in pairs)
    removed = [k for k in choices.get(node.get("choice", ""), ()) if k not in keys]
    forbidden = frozenset(removed + ["_" + k for k in removed])
    key_of = {k: k for k in keys} | {"_" + k: k for k in keys} if len(keys) > 1 else None
    return Rule(
        id=node["id"],
        label=label,
        keys=keys,
        key_of=key_of,
        min=node.get("min", 0),
        max=node.get("max"),
        fixed=node.get("fixed", _ABSENT),
        pattern=node.get("pattern", _ABSENT),
        codes=codes,
        code_values=code_values,
        value_set=value_set,
        forbidden=forbidden,
        children=tuple(_compile_rule(c, valuesets, choices) for c in node.get("children", ())),
        slices=tuple(
            Slice(s["name"], tuple((tuple(m["path"]), m["value"]) for m in s["match"]),
                  _compile_rule(s, valuesets, choices, keys))
            for s in node.get("slices", ())
        ),
    )


@cache
def rules() -> RuleSet:
    """The compiled rules (read and compiled once per process)."""
    data = orjson.loads(schema_path(RULES_FILE).read_bytes())
    valuesets, choices = data["valuesets"], data["choices"]
    profiles: dict[str, Profile] = {}
    for url, entry in data["profiles"].items():
        title = f"FHIR R4 {entry['type']}" if entry["base"] else entry["id"]
        children = tuple(_compile_rule(c, valuesets, choices) for c in entry.get("children", ()))
        profiles[url] = Profile(url, entry["id"], entry["type"], entry["base"], title, children)
    base_by_type = {p.type: p for p in profiles.values() if p.base}
    return RuleSet(profiles, base_by_type, profiles.get(EXTENSION_BASE))


def _contains(value: object, pattern: object) -> bool:
    """FHIR pattern semantics: every part of ``pattern`` is present in ``value`` (lists: some item matches)."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(k in value and _contains(value[k], p) for k, p in pattern.items())
    if isinstance(pattern, list):
        return isinstance(value, list) and all(any(_contains(v, p) for v in value) for p in pattern)
    return value == pattern


def _values_at(value: object, path: tuple[str, ...]) -> list[object]:
    current = [value]
    for part in path:
        nxt: list[object] = []
        for item in current:
            if isinstance(item, dict):
                found = item.get(part)
                if isinstance(found, list):
                    nxt.extend(found)
                elif found is not None:
                    nxt.append(found)
        current = nxt
    return current


def _in_slice(value: object, match: tuple[tuple[tuple[str, ...], object], ...]) -> bool:
    return all(any(_contains(v, expected) for v in _values_at(value, path)) for path, expected in match)


def _items(rule: Rule, obj: dict) -> list[tuple[object, str, int]]:
    """The values of an element in ``obj`` as (value, key, index; -1 when not in a list).

    A primitive carried only by its ``_key`` extension counts, with the value None.
    """
    if rule.key_of is None:
        keys: tuple[str, ...] | list[str] = rule.keys
    else:  # a choice element: look at the object's keys, not at every possible type
        keys = sorted({rule.key_of[k] for k in obj if k in rule.key_of})
    items: list[tuple[object, str, int]] = []
    for key in keys:
        value = obj.get(key)
        if value is None:
            value = obj.get("_" + key)
            if value is None:
                continue
            if isinstance(value, list):
                items.extend((None, key, i) for i in range(len(value)))
            else:
                items.append((None, key, -1))
        elif isinstance(value, list):
            items.extend((v, key, i) for i, v in enumerate(value))
        else:
            items.append((value, key, -1))
    return items


def _where(loc: str, key: str, index: int) -> str:
    return f"{loc}.{key}" if index < 0 else f"{loc}.{key}[{index}]"


def _short(value: object) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= 160 else text[:157] + "..."


def _codes_of(value: object) -> list[tuple[object, object]]:
    if isinstance(value, str):
        return [(None, value)]
    if not isinstance(value, dict):
        return []
    if "coding" in value or "code" not in value:
        return [(c.get("system"), c.get("code")) for c in value.get("coding") or () if isinstance(c, dict)]
    return [(value.get("system"), value.get("code"))]


def _in_binding(rule: Rule, value: object) -> bool:
    if isinstance(value, str):
        return value in rule.code_values
    return any(pair in rule.codes for pair in _codes_of(value))  # type: ignore[operator]


class _Checker:
    """Walks one resource (or one extension) with one profile's rules."""

    __slots__ = ("profile", "issues")

    def __init__(self, profile: Profile, issues: list[Issue]):
        self.profile = profile
        self.issues = issues

    def _issue(self, rule: str, message: str, location: str) -> None:
        self.issues.append(Issue("error", rule, f"{message} ({self.profile.title})", location))

    def children(self, rules: tuple[Rule, ...], obj: object, loc: str) -> None:
        """Apply element rules to the properties of ``obj`` (at location ``loc``)."""
        if not isinstance(obj, dict):
            return
        for rule in rules:
            items = _items(rule, obj)
            for key in rule.forbidden.intersection(obj) if rule.forbidden else ():
                self._issue("fhir.profile.type", f"{rule.id}: {key.lstrip('_')} is not allowed here; allowed: "
                            f"{', '.join(rule.keys)}", f"{loc}.{key}")
            self.count(rule, len(items), loc, rule.label)
            self.items(rule, items, loc)
            for sl in rule.slices:
                members = [item for item in items if _in_slice(item[0], sl.match)]
                self.count(sl.rule, len(members), loc, f"{rule.label}:{sl.name}")
                self.items(sl.rule, members, loc)

    def count(self, rule: Rule, n: int, loc: str, label: str) -> None:
        """Cardinality of an element or slice."""
        if n < rule.min:
            self._issue("fhir.profile.required", f"{rule.id} is required (min {rule.min}, found {n})",
                        f"{loc}.{label}")
        if rule.max is not None and n > rule.max:
            if rule.max == 0:
                self._issue("fhir.profile.prohibited", f"{rule.id} is not allowed (max 0)", f"{loc}.{label}")
            else:
                self._issue("fhir.profile.cardinality", f"{rule.id} allows at most {rule.max}, found {n}",
                            f"{loc}.{label}")

    def items(self, rule: Rule, items: list[tuple[object, str, int]], loc: str) -> None:
        """Value constraints on each present item, then its children."""
        for value, key, index in items:
            if value is None:
                continue
            if rule.fixed is not _ABSENT and value != rule.fixed:
                self._issue("fhir.profile.fixed", f"{rule.id} must be exactly {_short(rule.fixed)}; found "
                            f"{_short(value)}", _where(loc, key, index))
            if rule.pattern is not _ABSENT and not _contains(value, rule.pattern):
                self._issue("fhir.profile.fixed", f"{rule.id} must match the pattern {_short(rule.pattern)}; "
                            f"found {_short(value)}", _where(loc, key, index))
            if rule.codes is not None and not _in_binding(rule, value):
                found = ", ".join(f"{s}|{c}" if s else str(c) for s, c in _codes_of(value)) or "no code"
                self._issue("fhir.profile.binding", f"{rule.id}: {found} is not in the required value set "
                            f"{rule.value_set}", _where(loc, key, index))
            if (rule.children or rule.slices) and isinstance(value, dict):
                self.children(rule.children, value, _where(loc, key, index))


def _canonical(url: str) -> str:
    return url.split("|", 1)[0]


def check_profiles(resource: dict, label: str) -> list[Issue]:
    """Issues of one resource against its type's base rules and every profile in its ``meta.profile``."""
    ruleset = rules()
    issues: list[Issue] = []
    rtype = resource.get("resourceType")
    base = ruleset.base_by_type.get(rtype)  # type: ignore[arg-type]
    if base is not None:
        _Checker(base, issues).children(base.children, resource, label)
    meta = resource.get("meta")
    claimed = meta.get("profile") if isinstance(meta, dict) else None
    for i, url in enumerate(claimed if isinstance(claimed, list) else ()):
        if not isinstance(url, str):
            continue
        profile = ruleset.profiles.get(_canonical(url))
        where = f"{label}.meta.profile[{i}]"
        if profile is None:
            issues.append(Issue("warning", "fhir.profile.unknown",
                                f"no rules for profile {url}: only the base rules were checked", where))
        elif profile.type != rtype:
            issues.append(Issue("error", "fhir.profile.type", f"profile {profile.id} is for {profile.type}, "
                                f"not {rtype}", where))
        else:
            _Checker(profile, issues).children(profile.children, resource, label)
    return issues


def check_extension(extension: dict, location: str) -> list[Issue]:
    """Issues of one extension against the R4 Extension rules and its own definition (by ``url``)."""
    ruleset = rules()
    issues: list[Issue] = []
    if ruleset.extension_base is not None:
        _Checker(ruleset.extension_base, issues).children(ruleset.extension_base.children, extension, location)
    url = extension.get("url")
    profile = ruleset.profiles.get(url) if isinstance(url, str) else None
    if profile is not None and profile.type == "Extension":
        _Checker(profile, issues).children(profile.children, extension, location)
    return issues


# ---- the same rules as JSON Schema (for the fast path, ``fhir_fast``) ----------------------------------------
#
# ``children_schema`` translates compiled rules into a JSON Schema (draft 2019-09) that an object satisfies
# only when ``_Checker.children`` would report nothing: every keyword mirrors one step of ``children`` /
# ``count`` / ``items`` above. Where the schema does not mirror a rule exactly it errs on the strict side (a
# choice element's maximum: one type present, no list beyond the maximum): a stricter schema only sends more
# resources to the detailed check, never hides an issue. Slice membership must be exact (it decides both the
# minimum and the maximum count), so it is built only from string patterns; anything else is refused.


class Untranslatable(ValueError):
    """A rule the JSON Schema translation cannot express soundly (its profile's schema becomes ``false``)."""


def _pattern_schema(pattern: object) -> dict:
    """Exactly ``_contains(value, pattern)`` (string leaves only)."""
    if isinstance(pattern, dict):
        return {"type": "object", "required": sorted(pattern),
                "properties": {k: _pattern_schema(p) for k, p in pattern.items()}}
    if isinstance(pattern, list):
        items = [{"contains": _pattern_schema(p)} for p in pattern]
        return {"type": "array", "allOf": items} if items else {"type": "array"}
    if isinstance(pattern, str):
        return {"const": pattern}
    raise Untranslatable(f"non-string pattern value {pattern!r}")


def _at_path(path: tuple[str, ...], schema: object) -> object:
    """Exactly ``any(schema(v) for v in _values_at(value, path))`` when ``schema`` rejects null."""
    if not path:
        return schema
    inner = _at_path(path[1:], schema)
    return {"type": "object", "required": [path[0]],
            "properties": {path[0]: {"if": {"type": "array"}, "then": {"contains": inner}, "else": inner}}}


def _match_schema(match: tuple[tuple[tuple[str, ...], object], ...]) -> dict:
    """Exactly ``_in_slice(value, match)``."""
    if not match:
        raise Untranslatable("slice without a match pattern")
    return {"allOf": [_at_path(path, _pattern_schema(expected)) for path, expected in match]}


def _binding_schema(rule: Rule) -> object:
    """Exactly ``_in_binding(rule, value)`` for a present value."""
    known = rule.codes or frozenset()
    if not known:
        return False
    if not all(isinstance(s, str) and isinstance(c, str) for s, c in known):
        raise Untranslatable(f"value set {rule.value_set} has a non-string system or code")
    by_system: dict[str, list[str]] = {}
    for system, code in sorted(known):
        by_system.setdefault(system, []).append(code)
    pairs = {"anyOf": [{"type": "object", "required": ["system", "code"],
                        "properties": {"system": {"const": s}, "code": {"enum": codes}}}
                       for s, codes in by_system.items()]}
    return {"anyOf": [
        {"type": "string", "enum": sorted(rule.code_values)},
        {"type": "object", "required": ["coding"], "properties": {"coding": {"type": "array", "contains": pairs}}},
        {"type": "object", "required": ["code"], "not": {"required": ["coding"]}, "allOf": [pairs]},
    ]}


def _value_schema(rule: Rule) -> dict | None:
    """What ``_Checker.items`` demands of one present value (None: nothing)."""
    parts: list[object] = []
    if rule.fixed is not _ABSENT:
        if not isinstance(rule.fixed, str):
            raise Untranslatable(f"{rule.id}: non-string fixed value")
        parts.append({"const": rule.fixed})
    if rule.pattern is not _ABSENT:
        parts.append(_pattern_schema(rule.pattern))
    if rule.codes is not None:
        parts.append(_binding_schema(rule))
    if rule.children:
        parts.append({"if": {"type": "object"}, "then": children_schema(rule.children)})
    return {"allOf": parts} if parts else None


def _present(schema: object) -> dict:
    """``schema`` on each present (non-null) value of an element: the value, or each item of a list."""
    each = {"anyOf": [{"type": "null"}, schema]}
    return {"if": {"type": "array"}, "then": {"items": each}, "else": each}


def _at_least(key: str, n: int) -> dict:
    """The element ``key`` has at least ``n`` items as ``_items`` counts them (``_key`` when ``key`` is null)."""
    many = {"not": {"type": "null"}, "if": {"type": "array"}, "then": {"minItems": n}, "else": n == 1}
    return {"anyOf": [{"required": [key], "properties": {key: many}},
                      {"required": ["_" + key], "properties": {key: {"type": "null"}, "_" + key: many}}]}


def _count_schema(rule: Rule, required: frozenset[str] = frozenset()) -> list[object]:
    """Exactly the minimum of ``_Checker.count``; its maximum strictly.

    ``required``: the single-key elements with a minimum among ``rule``'s siblings (checked in the same schema).
    """
    parts: list[object] = []
    keys = rule.keys
    if rule.min > 0:
        if not keys or rule.min > 1 and len(keys) > 1:
            raise Untranslatable(f"{rule.id}: minimum {rule.min}")
        present = [_at_least(k, rule.min) for k in keys]
        parts.append(present[0] if len(present) == 1 else {"anyOf": present})
    if rule.max == 0:
        parts.append({"properties": {k: False for key in keys for k in (key, "_" + key)}})
    elif rule.max is not None:
        parts.append({"properties": {k: {"maxItems": rule.max} for key in keys for k in (key, "_" + key)}})
        if len(keys) > 1:  # a choice element: at most one of its types present
            one_type = {"dependentSchemas": {
                k: {"properties": {o: False for other in keys if other != key for o in (other, "_" + other)}}
                for key in keys for k in (key, "_" + key)}}
            # (costly: evaluated per listed key) not needed when the object has no room for a second type
            # beside the ``required`` keys the sibling rules demand (each present as key or _key)
            parts.append(one_type if not required or required & {k for key in keys for k in (key, "_" + key)}
                         else {"if": {"maxProperties": len(required) + 1}, "then": True, "else": one_type})
    return parts


def _union_pattern(patterns: list[object]) -> object | None:
    """A schema every value containing one of ``patterns`` satisfies (None: no cheap one)."""
    if all(isinstance(p, str) for p in patterns):
        return {"enum": sorted(set(patterns))}  # type: ignore[type-var]
    if all(isinstance(p, dict) for p in patterns):
        keys = sorted(set.intersection(*(set(p) for p in patterns)))  # type: ignore[arg-type]
        parts = {k: _union_pattern([p[k] for p in patterns]) for k in keys}  # type: ignore[index]
        return {"type": "object", "required": keys, "properties": {k: v for k, v in parts.items() if v is not None}}
    if all(isinstance(p, list) and p for p in patterns):
        first = _union_pattern([p[0] for p in patterns])  # type: ignore[index]
        return {"type": "array"} if first is None else {"type": "array", "contains": first}
    return None


def _any_member(slices: list[Slice]) -> object | None:
    """A cheap schema every member of any of ``slices`` satisfies (None: no cheap one)."""
    paths = {tuple(path for path, _ in sl.match) for sl in slices}
    if len(paths) != 1 or len(next(iter(paths))) != 1:
        return None
    union = _union_pattern([sl.match[0][1] for sl in slices])
    return None if union is None else _at_path(slices[0].match[0][0], union)


def _max_tree(capped: list[tuple[Slice, dict]]) -> object:
    """On a list: no slice of ``capped`` (each with a maximum of at least 1) has more members than its maximum.

    A binary tree: a group of slices needs no look at each slice when fewer than two items could be members.
    """
    if len(capped) == 1:
        sl, member = capped[0]
        return {"not": {"contains": member, "minContains": sl.rule.max + 1}}  # type: ignore[operator]
    half = len(capped) // 2
    split = {"allOf": [_max_tree(capped[:half]), _max_tree(capped[half:])]}
    union = _any_member([sl for sl, _ in capped])
    return split if union is None else {"if": {"not": {"contains": union, "minContains": 2}}, "then": True,
                                        "else": split}


def _items_tree(checked: list[tuple[Slice, dict, dict]]) -> object:
    """On one item: the value checks of every slice of ``checked`` it is a member of.

    A binary tree: a group of slices is skipped when the item cannot be a member of any of them.
    """
    if len(checked) == 1:
        _, member, value = checked[0]
        return {"if": member, "then": value}
    half = len(checked) // 2
    split = {"allOf": [_items_tree(checked[:half]), _items_tree(checked[half:])]}
    union = _any_member([sl for sl, _, _ in checked])
    return split if union is None else {"if": union, "then": split}


def _slices_schema(rule: Rule) -> list[object]:
    """Count and value checks of ``rule``'s slices (members: the items of its key that match a slice)."""
    if len(rule.keys) != 1:
        raise Untranslatable(f"{rule.id}: slices on a choice element")
    key = rule.keys[0]
    members = [(sl, _match_schema(sl.match)) for sl in rule.slices]
    parts: list[object] = []
    for sl, member in members:
        if sl.rule.min > 0:
            parts.append({"required": [key], "properties": {key: {
                "if": {"type": "array"}, "then": {"contains": member, "minContains": sl.rule.min},
                "else": member if sl.rule.min == 1 else False}}})
        if sl.rule.max == 0:
            parts.append({"properties": {key: {
                "if": {"type": "array"}, "then": {"not": {"contains": member}}, "else": {"not": member}}}})
    capped = [(sl, member) for sl, member in members if sl.rule.max]
    if capped:  # a single value is one member at most: within any maximum of at least 1
        parts.append({"properties": {key: {"if": {"type": "array"}, "then": _max_tree(capped)}}})
    checked = [(sl, member, value) for sl, member in members if (value := _value_schema(sl.rule)) is not None]
    if checked:
        tree = _items_tree(checked)
        parts.append({"properties": {key: {"if": {"type": "array"}, "then": {"items": tree}, "else": tree}}})
    return parts


def _element_schema(rule: Rule, required: frozenset[str]) -> list[object]:
    parts: list[object] = []
    if rule.forbidden:
        parts.append({"properties": {k: False for k in sorted(rule.forbidden)}})
    parts += _count_schema(rule, required)
    value = _value_schema(rule)
    if value is not None:
        parts.append({"properties": {k: _present(value) for k in rule.keys}})
    if rule.slices:
        parts += _slices_schema(rule)
    return parts


def children_schema(rules: tuple[Rule, ...]) -> dict:
    """A JSON Schema an object satisfies only when ``_Checker.children(rules, obj)`` would report nothing."""
    required = frozenset(r.keys[0] for r in rules if r.min > 0 and len(r.keys) == 1)
    parts: list[object] = []
    for rule in rules:
        parts += _element_schema(rule, required)
    return {"allOf": parts} if parts else {}


def profile_schema(profile: Profile) -> object:
    """``children_schema`` of a profile's rules, or ``False`` (never clean) when one cannot be translated."""
    try:
        return children_schema(profile.children)
    except Untranslatable:
        return False
