"""Derive ``schemas/fhir/profile-rules.json`` from StructureDefinitions and ValueSets.

Sources (all under ``../shared/reference/fhir`` by default):

* every StructureDefinition of HL7 mCODE STU4 (``mcode-stu4/package``, snapshots) and the ValueSets there;
* the FHIR R4 core resource StructureDefinitions (``r4-core/structuredefinitions``): the *base* rules of each
  resource type (cardinalities every instance must meet, with or without ``meta.profile``), and the core
  extension definitions (``r4-core/extensions``) that the included profiles use;
* US Core 6.1.0 (``us-core-6.1.0``, differential only): ``us-core-smokingstatus`` and the US Core extensions
  used by the included profiles; their snapshot is computed here by laying the differential over the base.

Each profile becomes a tree of the elements that carry a constraint the validator checks:

``min`` / ``max``
    cardinality, written only where the profile narrows the base (the base rules carry the base);
    slices always carry their own counts (they count the members of the slice).
``fixed`` / ``pattern``
    ``fixed[x]`` (exact equality) and ``pattern[x]`` (the instance contains the pattern).
``binding``
    required bindings whose value set the package enumerates (``valuesets`` holds the codes).
``choice``
    on a ``x[x]`` element whose types the profile narrows: the base element path; ``choices`` lists every
    JSON key the base allows there, so a key outside ``keys`` is a type the profile removed.
``slices``
    with ``match``: the (path, value) pairs an item must contain to belong to the slice.

Everything a rule could not be made for (intensional value sets, slices whose membership needs a value set
or a resolved reference, ...) is listed under ``not_checked`` with the reason.

Usage::

    python tools/build_profile_rules.py [--reference DIR] [--out PATH]

The output is deterministic (same input, same bytes).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REFERENCE = ROOT.parent / "shared" / "reference" / "fhir"
DEFAULT_OUT = ROOT / "schemas" / "fhir" / "profile-rules.json"

US_CORE_PROFILES = ("us-core-smokingstatus",)
# Core resource definitions that describe abstract ancestors, not instances.
ABSTRACT_CORE = ("Resource", "DomainResource", "Element", "BackboneElement")


def _canonical(url: str) -> str:
    return url.split("|", 1)[0]


def _upper_first(text: str) -> str:
    return text[:1].upper() + text[1:]


def _load_dir(folder: Path, prefix: str) -> list[dict]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob(f"{prefix}*.json"))]


@dataclass
class Source:
    """One package the rules come from."""

    name: str
    sds: dict[str, dict] = field(default_factory=dict)
    valuesets: dict[str, dict] = field(default_factory=dict)


@dataclass
class Node:
    """One element of a profile's element tree (children by name, slices by slice name)."""

    name: str
    element: dict | None = None
    children: dict[str, Node] = field(default_factory=dict)
    slices: dict[str, Node] = field(default_factory=dict)

    def child(self, name: str) -> Node:
        """The child named ``name`` (created when the snapshot skips it)."""
        return self.children.setdefault(name, Node(name))


class Builder:
    """Turns StructureDefinitions into rule trees."""

    def __init__(self, sources: list[Source]):
        self.sds: dict[str, dict] = {}
        self.source_of: dict[str, str] = {}
        self.valuesets: dict[str, dict] = {}
        for src in sources:
            for url, sd in src.sds.items():
                self.sds.setdefault(url, sd)
                self.source_of.setdefault(url, src.name)
            for url, vs in src.valuesets.items():
                self.valuesets.setdefault(url, vs)
        self.core_paths: dict[str, dict] = {}   # element path -> core element (base types)
        for sd in self.sds.values():
            if sd.get("derivation") == "specialization":
                for el in sd["snapshot"]["element"]:
                    self.core_paths.setdefault(el["path"], el)
        self.used_valuesets: dict[str, dict] = {}
        self.choices: dict[str, list[str]] = {}   # base path of a narrowed x[x] -> every key the base allows
        self.not_checked: list[dict] = []
        self._snapshots: dict[str, list[dict]] = {}

    # ---- snapshots -------------------------------------------------------------------------------------
    def snapshot(self, url: str) -> list[dict]:
        """The snapshot elements of a StructureDefinition (computed from the differential when absent)."""
        if url in self._snapshots:
            return self._snapshots[url]
        sd = self.sds[url]
        if "snapshot" in sd:
            elements = sd["snapshot"]["element"]
        else:
            base_url = _canonical(sd["baseDefinition"])
            if base_url not in self.sds:
                raise SystemExit(f"{url}: base {base_url} not available to compute a snapshot")
            elements = self._merge(self.snapshot(base_url), sd["differential"]["element"])
        self._snapshots[url] = elements
        return elements

    def _merge(self, base: list[dict], differential: list[dict]) -> list[dict]:
        """Lay a differential over a base snapshot (enough for differential-only US Core profiles)."""
        merged: dict[str, dict] = {el["id"]: copy.deepcopy(el) for el in base}
        by_path = {el["path"]: el for el in base if "sliceName" not in el}
        for diff in differential:
            if diff["id"] in merged:
                target = merged[diff["id"]]
                if any(k.startswith(("fixed", "pattern")) for k in diff):
                    for k in [k for k in target if k.startswith(("fixed", "pattern"))]:
                        del target[k]
                target.update(copy.deepcopy(diff))
                continue
            template = by_path.get(diff["path"]) or self._choice_base(by_path, diff["path"])
            new = copy.deepcopy(template) if template else {"min": 0, "max": "*"}
            new.pop("slicing", None)
            if "sliceName" in diff:  # a slice counts its own members; its base is the sliced element's
                new["min"], new["max"] = 0, "*"
            new.update(copy.deepcopy(diff))
            if template is None:
                new.setdefault("base", {"path": diff["path"], "min": 0, "max": "*"})
            merged[diff["id"]] = new
        return list(merged.values())

    @staticmethod
    def _choice_base(by_path: dict[str, dict], path: str) -> dict | None:
        """The base ``x[x]`` element for a type-specific path such as ``Observation.effectiveDateTime``."""
        parent, _, name = path.rpartition(".")
        for cand_path, el in by_path.items():
            if cand_path.startswith(parent + ".") and cand_path.endswith("[x]"):
                prefix = cand_path[len(parent) + 1:-3]
                if "." not in prefix and name.startswith(prefix) and name[len(prefix):][:1].isupper():
                    return el
        return None

    # ---- trees -----------------------------------------------------------------------------------------
    @staticmethod
    def tree(elements: list[dict]) -> Node:
        """The element tree of a snapshot (type slices of ``x[x]`` become the sibling ``xType``)."""
        root = Node(elements[0]["path"], elements[0])
        for el in elements[1:]:
            segments = el["id"].split(".")
            if ".".join(s.split(":")[0] for s in segments) != el["path"]:
                raise SystemExit(f"cannot split element id {el['id']!r} (path {el['path']!r})")
            node = root
            for seg in segments[1:]:
                name, _, slice_name = seg.partition(":")
                if slice_name and name.endswith("[x]") and slice_name.startswith(name[:-3]) \
                        and slice_name[len(name) - 3:][:1].isupper():
                    node = node.child(slice_name)        # type slice value[x]:valueQuantity
                elif slice_name:
                    parent = node.child(name)
                    node = parent.slices.setdefault(slice_name, Node(name))
                else:
                    node = node.child(name)
            node.element = el
        return root

    def compile_profile(self, url: str) -> dict:
        """The rule entry of one StructureDefinition."""
        sd = self.sds[url]
        is_base = sd.get("derivation") == "specialization"
        root = self.tree(self.snapshot(url))
        ctx = _Ctx(self, sd, is_base)
        compiled = ctx.node(root, root=True) or {}
        return {
            "id": sd["id"],
            "name": sd.get("name", sd["id"]),
            "type": sd["type"],
            "kind": sd.get("kind", ""),
            "abstract": bool(sd.get("abstract")),
            "base": is_base,
            "source": self.source_of[url],
            "children": compiled.get("children", []),
        }

    # ---- value sets ------------------------------------------------------------------------------------
    def enumerate_valueset(self, url: str, seen: frozenset[str] = frozenset()) -> tuple[list[list[str]] | None, str]:
        """The (system, code) pairs of a value set, or None with the reason it is not enumerable."""
        canonical = _canonical(url)
        vs = self.valuesets.get(canonical)
        if vs is None:
            return None, "value set not in the reference packages"
        if canonical in seen:
            return None, "value set includes itself"
        contains = vs.get("expansion", {}).get("contains")
        if contains:
            codes: set[tuple[str, str]] = set()
            stack = list(contains)
            while stack:
                item = stack.pop()
                if "code" in item and not item.get("abstract"):
                    codes.add((item["system"], item["code"]))
                stack.extend(item.get("contains", []))
            return sorted(list(c) for c in codes), ""
        compose = vs.get("compose", {})
        codes = set()
        for inc in compose.get("include", []):
            if "filter" in inc:
                return None, f"intensional: filter on {inc.get('system', '?')} (" + ", ".join(
                    f"{f.get('property')} {f.get('op')} {f.get('value')}" for f in inc["filter"]) + ")"
            if inc.get("valueSet") and inc.get("concept"):
                return None, "include combines concepts with value sets"
            if inc.get("valueSet"):
                for sub in inc["valueSet"]:
                    sub_codes, why = self.enumerate_valueset(sub, seen | {canonical})
                    if sub_codes is None:
                        return None, f"includes {_canonical(sub)}: {why}"
                    codes.update(tuple(c) for c in sub_codes)
            elif inc.get("concept"):
                codes.update((inc["system"], c["code"]) for c in inc["concept"])
            else:
                return None, f"includes all of code system {inc.get('system', '?')}"
        for exc in compose.get("exclude", []):
            if "concept" not in exc or "filter" in exc or "valueSet" in exc:
                return None, "exclude is not a concept list"
            codes -= {(exc["system"], c["code"]) for c in exc["concept"]}
        if not codes:
            return None, "value set has no enumerated concepts"
        return sorted(list(c) for c in codes), ""

    def extension_urls(self, url: str) -> set[str]:
        """Extension definitions the elements of a StructureDefinition use."""
        found = set()
        for el in self.snapshot(url):
            for t in el.get("type", []):
                if t.get("code") == "Extension":
                    found.update(_canonical(p) for p in t.get("profile", []))
        return found


class _Ctx:
    """Compilation of one StructureDefinition."""

    def __init__(self, builder: Builder, sd: dict, is_base: bool):
        self.b = builder
        self.sd = sd
        self.is_base = is_base

    def _note(self, el_id: str, what: str, reason: str) -> None:
        self.b.not_checked.append({"profile": self.sd["id"], "element": el_id, "what": what, "reason": reason})

    def _base(self, el: dict) -> tuple[int, str, list[str] | None]:
        base = el.get("base") or {}
        core = self.b.core_paths.get(base.get("path", ""))
        types = [t["code"] for t in core.get("type", [])] if core else None
        return int(base.get("min", 0)), str(base.get("max", "*")), types

    def node(self, node: Node, *, root: bool = False, slice_root: bool = False) -> dict | None:
        """The compiled rule node, or None when nothing under it is checked."""
        el = node.element or {}
        el_id = el.get("id", node.name)
        out: dict = {"id": el_id}
        types = [t["code"] for t in el.get("type", [])]
        base_min, base_max, base_types = self._base(el)
        choice = node.name.endswith("[x]")
        if choice and not types and base_types:
            types = base_types
        if not slice_root:
            out["keys"] = [node.name[:-3] + _upper_first(t) for t in types] if choice else [node.name]
        if not root and el:
            emin, emax = int(el.get("min", 0)), str(el.get("max", "*"))
            if self.is_base:
                if emin > 0:
                    out["min"] = emin
                if choice and emax != "*":
                    out["max"] = int(emax)
            elif slice_root:
                if emin > 0:
                    out["min"] = emin
                if emax != "*":
                    out["max"] = int(emax)
            else:
                if emin > base_min:
                    out["min"] = emin
                if emax != base_max and emax != "*":
                    out["max"] = int(emax)
            for key, value in el.items():
                if key.startswith("fixed"):
                    out["fixed"] = value
                elif key.startswith("pattern"):
                    out["pattern"] = value
            self._binding(el, types, out)
            if choice and base_types and not self.is_base and el.get("max") != "0":
                base_keys = [node.name[:-3] + _upper_first(t) for t in base_types]
                if set(base_keys) - set(out["keys"]):
                    base_path = el["base"]["path"]
                    self.b.choices[base_path] = base_keys
                    out["choice"] = base_path
        children = [c for c in (self.node(ch) for ch in node.children.values()) if c]
        if children:
            out["children"] = children
        slices = self._slices(node, el)
        if slices:
            out["slices"] = slices
        checked = set(out) - {"id", "keys"}
        return out if checked else None

    def _binding(self, el: dict, types: list[str], out: dict) -> None:
        binding = el.get("binding") or {}
        if binding.get("strength") != "required" or not binding.get("valueSet"):
            return
        vs_url = _canonical(binding["valueSet"])
        codes, why = self.b.enumerate_valueset(vs_url)
        if codes is None:
            self._note(el["id"], "binding", f"required binding to {binding['valueSet']}: {why}")
            return
        vs = self.b.valuesets[vs_url]
        self.b.used_valuesets[vs_url] = {"title": vs.get("title", vs.get("name", "")), "codes": codes}
        out["binding"] = {"valueSet": vs_url, "types": types}

    def _slices(self, node: Node, el: dict) -> list[dict]:
        if not node.slices:
            return []
        discriminators = (el.get("slicing") or {}).get("discriminator", [])
        out = []
        for slice_name, slice_node in node.slices.items():
            slice_id = (slice_node.element or {}).get("id", f"{el.get('id', node.name)}:{slice_name}")
            match, why = self._match(discriminators, slice_node)
            compiled = self.node(slice_node, slice_root=True)
            if compiled is None:
                continue
            if match is None:
                self._note(slice_id, "slice", why)
                continue
            compiled["name"] = slice_name
            compiled["match"] = match
            out.append(compiled)
        return out

    def _match(self, discriminators: list[dict], slice_node: Node) -> tuple[list[dict] | None, str]:
        if not discriminators:
            return None, "slicing without discriminator"
        match = []
        for disc in discriminators:
            kind, path = disc.get("type"), disc.get("path", "")
            if kind not in ("value", "pattern"):
                return None, f"{kind} discriminator on {path!r} (needs the type or profile of a resolved item)"
            parts = [] if path == "$this" else path.split(".")
            target: Node | None = slice_node
            for part in parts:
                target = target.children.get(part) if target else None
            value = None
            if target is not None and target.element:
                value = next((v for k, v in target.element.items() if k.startswith(("fixed", "pattern"))), None)
            if value is None:
                value = self._profile_value(slice_node, parts)
            if value is None:
                return None, f"{kind} discriminator on {path!r}: the slice fixes no value there " \
                             "(membership would need a value set or a resolved reference)"
            match.append({"path": parts, "value": value})
        return match, ""

    def _profile_value(self, slice_node: Node, parts: list[str]) -> object:
        """The fixed/pattern value at ``parts`` in the profile of the slice's type (e.g. an extension's url)."""
        for t in (slice_node.element or {}).get("type", []):
            for profile in t.get("profile", []):
                url = _canonical(profile)
                if url not in self.b.sds:
                    continue
                path = ".".join([t["code"], *parts])
                for el in self.b.snapshot(url):
                    if el["id"] == path:
                        return next((v for k, v in el.items() if k.startswith(("fixed", "pattern"))), None)
        return None


def load_sources(reference: Path) -> list[Source]:
    """Read the packages under ``reference`` (``../shared/reference/fhir``)."""
    mcode = Source("hl7.fhir.us.mcode#4.0.0")
    for sd in _load_dir(reference / "mcode-stu4" / "package", "StructureDefinition-"):
        mcode.sds[sd["url"]] = sd
    for vs in _load_dir(reference / "mcode-stu4" / "package", "ValueSet-"):
        mcode.valuesets[vs["url"]] = vs
    core = Source("hl7.fhir.r4.core#4.0.1")
    for sd in _load_dir(reference / "r4-core" / "structuredefinitions", "StructureDefinition-"):
        core.sds[sd["url"]] = sd
    for sd in _load_dir(reference / "r4-core" / "extensions", "StructureDefinition-"):
        core.sds[sd["url"]] = sd
    us_core = Source("hl7.fhir.us.core#6.1.0")
    us_dir = reference / "us-core-6.1.0"
    if us_dir.is_dir():
        for sd in _load_dir(us_dir, "StructureDefinition-"):
            if sd.get("resourceType") == "StructureDefinition":
                us_core.sds[sd["url"]] = sd
    return [mcode, core, us_core]


def build_rules(reference: Path) -> dict:
    """The whole rules document."""
    sources = load_sources(reference)
    mcode, core, us_core = sources
    builder = Builder(sources)
    wanted = sorted(mcode.sds)
    wanted += sorted(u for u in us_core.sds if u.rsplit("/", 1)[-1] in US_CORE_PROFILES)
    wanted += sorted(u for u, sd in core.sds.items()
                     if sd.get("derivation") == "specialization" and sd["id"] not in ABSTRACT_CORE)
    todo = list(wanted)
    while todo:  # extension definitions used by what is included, transitively
        url = todo.pop()
        for ext in sorted(builder.extension_urls(url)):
            if ext not in wanted and ext in builder.sds:
                wanted.append(ext)
                todo.append(ext)
    missing_ext = sorted({e for u in wanted for e in builder.extension_urls(u)} - set(builder.sds))
    profiles = {url: builder.compile_profile(url) for url in sorted(set(wanted))}
    for ext in missing_ext:
        builder.not_checked.append({"profile": ext, "element": "Extension", "what": "extension",
                                    "reason": "extension definition not in the reference packages"})
    return {
        "description": (
            "FHIR profile rules generated by tools/build_profile_rules.py from the mCODE STU4 package, the FHIR "
            "R4 core StructureDefinitions and US Core 6.1.0. Read by converter/validate/fhir_profiles.py; see "
            "docs/fhir-validation.md. Do not edit by hand."
        ),
        "sources": sorted(s.name for s in sources),
        "profiles": profiles,
        "valuesets": dict(sorted(builder.used_valuesets.items())),
        "choices": dict(sorted(builder.choices.items())),
        "not_checked": sorted(builder.not_checked, key=lambda n: (n["profile"], n["element"], n["what"])),
    }


def main(argv: list[str] | None = None) -> int:
    """Command line entry point: write the rules file."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE, help="../shared/reference/fhir")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    rules = build_rules(args.reference)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rules, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{args.out}: {len(rules['profiles'])} profiles, {len(rules['valuesets'])} value sets, "
          f"{len(rules['not_checked'])} constraints not checked, {args.out.stat().st_size:,} bytes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
