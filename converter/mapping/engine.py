"""The mapping engine: a set of compiled mapping files applied to cases.

Mapping files are read, linted and compiled once (:meth:`MappingSet.load`); :meth:`MappingSet.apply` then
runs every rule over one case without re-reading anything. The result carries FHIR resources, SDTM rows,
what each output came from (provenance) and what in the case no rule used (unmapped facts).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from converter.case.model import Case, resolve_path
from converter.errors import MappingError
from converter.mapping.rules import Chain, MappingFile, Row, Rule
from converter.mapping.terminology import Terminology
from converter.mapping.verbs import Origin, Run, pattern_of, resource_id, resource_key


@dataclass(slots=True)
class MappedCase:
    """Everything the mapping produced for one case.

    ``reads`` is what :attr:`touched` lists, flat (``where, origin, output, where, …``): one list instead of a
    tuple per read keeps the garbage collector's work per case small.
    """

    case: Case
    resources: list[dict[str, Any]]
    rows: list[Row]
    resource_rules: list[Rule]
    reads: list[Any]
    unmapped: list[dict[str, str]]

    @property
    def touched(self) -> list[tuple[str, Origin, Any]]:
        """Every read of the case, in order: (document path, what it fed, the resource id pair or SDTM row)."""
        reads = self.reads
        return list(zip(reads[0::3], reads[1::3], reads[2::3]))

    def unused_facts(self) -> list[str]:
        """Leaf paths of the case that no rule read (in document order): no read of the leaf or of an
        enclosing element."""
        out: list[str] = []
        _unused(self.case.data, "", set(self.reads[0::3]), out)
        return out


_LEAF_TYPES = frozenset({str, int, float, bool, type(None)})  # values that are leaves without an isinstance check


def _unused(node: dict[str, Any] | list[Any], where: str, used: set[str], out: list[str]) -> None:
    """Append the leaves below ``node`` (not read itself) that neither they nor an enclosing element read."""
    if isinstance(node, dict):
        prefix = where + "." if where else ""
        for k, v in node.items():
            if type(k) is str and "." not in k and "[" not in k:
                path = prefix + k
            else:
                name = k if type(k) is str else str(k)
                path = prefix + name
                if "." in name or "[" in name:  # a key that looks like a path: check each leaf by its text, as reads are
                    out.extend(leaf for leaf in _leaves(v, path) if not _covered(leaf, used))
                    continue
            if path not in used:
                if type(v) in _LEAF_TYPES or not isinstance(v, (dict, list)):
                    out.append(path)
                else:
                    _unused(v, path, used, out)
    else:
        for i, v in enumerate(node):
            path = f"{where}[{i}]"
            if path not in used:
                if type(v) in _LEAF_TYPES or not isinstance(v, (dict, list)):
                    out.append(path)
                else:
                    _unused(v, path, used, out)


def _covered(leaf: str, used: set[str]) -> bool:
    """Whether ``leaf`` or a path it starts with (cut at "." or "[") was read."""
    prefix = leaf
    while prefix:
        if prefix in used:
            return True
        cut = max(prefix.rfind("."), prefix.rfind("["))
        prefix = prefix[:cut] if cut > 0 else ""
    return False


def _leaves(node: Any, where: str) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, f"{where}.{k}" if where else k)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _leaves(v, f"{where}[{i}]")
    else:
        yield where


@dataclass(slots=True)
class MappingSet:
    """All mapping files of one folder, compiled, with their terminology."""

    folder: Path
    files: list[MappingFile]
    terminology: Terminology
    digest: str
    by_pattern: dict[str, list[Rule]] = field(default_factory=dict)
    ref_rules: dict[tuple[str, str | None], list[Rule]] = field(default_factory=dict)  # by (pattern, rule id)

    @classmethod
    def load(cls, folder: Path | None = None, *, strict: bool = True) -> "MappingSet":
        """Read, lint and compile a mapping folder (default: the shipped ``mappings/``).

        With ``strict`` any lint error raises :class:`MappingError` listing every problem with file:line:col.
        """
        from converter.mapping.lint import lint_folder

        mapping_set, issues = lint_folder(folder)
        errors = [i for i in issues if i.severity == "error"]
        if strict and errors:
            raise MappingError(errors)
        return mapping_set

    @property
    def rules(self) -> list[Rule]:
        """Every rule, in file order."""
        return [r for f in self.files for r in f.rules]

    def index(self) -> None:
        """Index FHIR rules by the pattern of the entities they turn into resources (for ``$ref``)."""
        self.by_pattern, self.ref_rules = {}, {}
        for rule in self.rules:
            if rule.target == "fhir":
                self.by_pattern.setdefault(rule.pattern, []).append(rule)

    def apply(self, case: Case, targets: frozenset[str] = frozenset({"fhir", "sdtm"})) -> MappedCase:
        """Run every rule over one case."""
        data = case.data
        case_id = case.case_id
        by_pattern, ref_rules = self.by_pattern, self.ref_rules
        rids: dict[tuple[str, str], str] = {}  # resource ids of this case (a per-case cache), by (rule, key)

        def rid_of(rule_id: str, key: str) -> str:
            rid = rids.get((rule_id, key))
            if rid is None:
                rid = rids[(rule_id, key)] = resource_id(case_id, rule_id, key)
            return rid

        ref_cache: dict[tuple[str, str | None], list[str]] = {}  # also ``run.refs``: generated code looks there first

        def ref_index(entity_path: str, rule_id: str | None) -> list[str]:
            cached = ref_cache.get((entity_path, rule_id))
            if cached is not None:
                return cached
            ref_cache[(entity_path, rule_id)] = found = _ref_ids(entity_path, rule_id)
            return found

        seen: dict[str, tuple[str, Chain]] = {}  # entity path → (its pattern, its scope chain), for every item

        def _ref_ids(entity_path: str, rule_id: str | None) -> list[str]:
            pattern, chain = seen.get(entity_path) or (pattern_of(entity_path), None)
            rules = ref_rules.get((pattern, rule_id))
            if rules is None:
                rules = ref_rules[(pattern, rule_id)] = [r for r in by_pattern.get(pattern, [])
                                                         if not rule_id or r.id == rule_id]
            if not rules:
                return []
            if chain is None:  # an entity no rule of this case iterates
                chain = _chain_at(entity_path, data)
            key = resource_key(chain[-2], entity_path)
            return ["urn:uuid:" + rid_of(r.id, key) for r in rules if r.when is None or r.when(run, *chain)]

        run = Run(case_id, data, case.ids, self.terminology, ref_index, ref_cache)
        resources: list[dict[str, Any]] = []
        resource_rules: list[Rule] = []
        rows: list[Row] = []
        # every item of every rule, each entity recorded for references before any rule emits
        items: dict[tuple[str, ...], list[Chain]] = {}  # by for_each path: rules over the same items share them
        for f in self.files:
            if f.target in targets:
                for rule in f.rules:
                    if rule.for_each.steps not in items:
                        items[rule.for_each.steps] = rule.items(data, "", seen)
        for f in self.files:
            if f.target in targets:
                for rule in f.rules:
                    chains = items[rule.for_each.steps]
                    if chains:
                        rule.produce(run, rule, chains, rid_of, resources, resource_rules, rows)
        run.ref_index = _no_refs  # break the run ↔ closure cycle: the case is freed by refcounting, not the GC
        return MappedCase(case, resources, rows, resource_rules, run.reads, run.unmapped)


def _no_refs(entity_path: str, rule_id: str | None) -> list[str]:
    return []


def _chain_at(path: str, data: dict[str, Any]) -> Chain:
    """The scope chain a rule would have for the entity at ``path`` (root, each list level, the entity)."""
    chain: list[Any] = [data, ""]
    cuts = [m.end() for m in re.finditer(r"\[\d+\]", path)]
    if not cuts or cuts[-1] != len(path):
        cuts.append(len(path))
    for end in cuts:
        chain += (resolve_path(data, path[:end]), path[:end])
    return tuple(chain)


def digest_files(paths: list[Path]) -> str:
    """SHA-256 over the mapping and terminology files (reported with every run)."""
    h = hashlib.sha256()
    if not paths:
        return h.hexdigest()
    common = Path(os.path.commonpath([str(p) for p in paths])) if len(paths) > 1 else Path(paths[0]).parent
    for p in sorted(paths):
        h.update(Path(p).relative_to(common).as_posix().encode())  # where the folder lives does not matter
        h.update(b"\0")
        h.update(Path(p).read_bytes())
    return h.hexdigest()
