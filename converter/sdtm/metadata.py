"""SDTMIG 3.4 dataset and variable metadata, loaded once from ``schemas/sdtm/sdtmig-3.4.json``.

The JSON is generated from the CDISC SDTMIG v3.4 metadata by ``tools/build_sdtm_metadata.py``. A dataset name
resolves to its SDTMIG table as follows:

* an SDTMIG 3.4 dataset (``AE``, ``DM``, ``RELREC``, ``SUPPQUAL``…) is itself;
* ``SUPP--`` (``SUPPAE``, ``SUPPDM``…) uses the ``SUPPQUAL`` structure (label "Supplemental Qualifiers for AE");
* a split dataset (``QSPH``, ``FACM``: an SDTMIG domain code plus one or two characters) uses its domain's.

SDTMIG lists each domain's variables with resolved names (``AESEQ``). Variables that the SDTM model lets a
domain of a general observation class carry although the IG does not list them for it (``CMLNKGRP``) are
*class variables*: :func:`is_variable` accepts them only with ``include_class=True``.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace, dataclass, field
from functools import cache
from typing import Any, Literal

from converter.resources import schema_path
from converter.sdtm.model import Variable

METADATA_FILE = "sdtm/sdtmig-3.4.json"
_SUPP = re.compile(r"^SUPP([A-Z][A-Z0-9]{1,3})$")


@dataclass(frozen=True, slots=True)
class DomainMeta:
    """SDTMIG 3.4 facts about one dataset name (a standard dataset, a SUPP-- or a split dataset)."""

    name: str                   # the dataset name asked for: "AE", "SUPPAE", "QSPH"
    source: str                 # the SDTMIG table it follows: "AE", "SUPPQUAL", "QS"
    domain: str                 # DOMAIN of its records; for SUPP-- the parent (RDOMAIN): "AE"
    label: str
    domain_class: str           # "Events", "Findings", "Special-Purpose", "Relationship"…
    structure: str
    prefix: str                 # variable prefix ("AE", "QS"), "" for SUPP--/RELREC
    variables: tuple[Variable, ...]
    value_domains: dict[str, str] = field(default_factory=dict)         # "AESTDTC" -> "ISO 8601 datetime or interval"
    codelists: dict[str, tuple[str, ...]] = field(default_factory=dict)  # "AESEV" -> ("C66769",)

    def variable(self, name: str) -> Variable | None:
        """The SDTMIG variable ``name`` of this dataset, or None."""
        return _index(self.name).get(name)

    @property
    def names(self) -> list[str]:
        """Variable names in SDTMIG order."""
        return [v.name for v in self.variables]


@cache
def _document() -> dict[str, Any]:
    return json.loads(schema_path(METADATA_FILE).read_text(encoding="utf-8"))


def dataset_names() -> list[str]:
    """The SDTMIG 3.4 datasets, in the IG's order (63, SUPPQUAL and RELREC included)."""
    return list(_document()["datasets"])


def _resolve(name: str) -> tuple[str, str] | None:
    """(SDTMIG table, DOMAIN) for a dataset name, or None when unknown."""
    tables = _document()["datasets"]
    if name in tables:
        return name, name
    supp = _SUPP.match(name)
    if supp:
        return "SUPPQUAL", supp.group(1)
    if 3 <= len(name) <= 4 and name[:2] in tables and tables[name[:2]]["prefix"]:
        return name[:2], name[:2]
    return None


def is_domain(name: str) -> bool:
    """True when ``name`` is an SDTMIG 3.4 dataset, a SUPP-- dataset or a split of an SDTMIG domain."""
    return _resolve(name.upper()) is not None


def _variable(raw: dict[str, Any], prefix: str) -> Variable:
    name = raw["name"]
    if name.startswith("--"):
        name = prefix + name[2:]
    return Variable(name=name, label=raw["label"], type=raw["type"], role=raw["role"], core=raw["core"],
                    codelist=";".join(raw["codelists"]))


@cache
def domain_meta(name: str) -> DomainMeta:
    """Metadata of dataset ``name``; raises KeyError for a name SDTMIG 3.4 does not define."""
    key = name.upper()
    resolved = _resolve(key)
    if resolved is None:
        raise KeyError(f"{name!r} is not an SDTMIG 3.4 dataset, SUPP-- dataset or split dataset")
    table, domain = resolved
    raw = _document()["datasets"][table]
    label = raw["label"].replace("[domain name]", domain) if table == "SUPPQUAL" else raw["label"]
    return DomainMeta(
        name=key, source=table, domain=domain, label=label, domain_class=raw["class"], structure=raw["structure"],
        prefix=raw["prefix"],
        variables=tuple(_variable(v, raw["prefix"]) for v in raw["variables"]),
        value_domains={v["name"]: v["value_domain"] for v in raw["variables"] if "value_domain" in v},
        codelists={v["name"]: tuple(v["codelists"]) for v in raw["variables"] if v["codelists"]},
    )


def dataset_label(name: str) -> str:
    """SDTMIG label of a dataset (``Supplemental Qualifiers for AE`` for SUPPAE); KeyError when unknown."""
    return domain_meta(name).label


def dataset_class(name: str) -> str:
    """SDTMIG class of a dataset (``Events``, ``Relationship``…); KeyError when unknown."""
    return domain_meta(name).domain_class


@cache
def _index(name: str) -> dict[str, Variable]:
    return {v.name: v for v in domain_meta(name).variables}


@cache
def _class_index(name: str) -> dict[str, tuple[Variable, str, tuple[str, ...]]]:
    meta = domain_meta(name)
    raw = _document()["class_variables"].get(meta.domain_class, [])
    out = {}
    for entry in raw:
        var = _variable(entry, meta.prefix)
        if (entry["name"].startswith("--") and not meta.prefix) or var.name in _index(name):
            continue
        out[var.name] = (var, entry.get("value_domain", ""), tuple(entry["codelists"]))
    return out


def variables(domain: str) -> list[Variable]:
    """The SDTMIG 3.4 variables of a dataset, in order, names resolved (``--SEQ`` → ``AESEQ``)."""
    return list(domain_meta(domain).variables)


def class_variable(domain: str, name: str) -> Variable | None:
    """A general-observation-class variable the SDTM model allows in ``domain`` though SDTMIG does not list it."""
    entry = _class_index(domain.upper()).get(name)
    if entry:
        return entry[0]
    m = re.match(r"^COVAL(\d+)$", name)
    if domain.upper() == "CO" and m:  # SDTMIG 3.4 CO: comments over 200 characters continue in COVAL1, COVAL2…
        base = _index("CO")["COVAL"]
        return replace(base, name=name, label=f"{base.label} {m.group(1)}", core="Perm")
    return None


def variable(domain: str, name: str, *, include_class: bool = False) -> Variable | None:
    """The variable ``name`` of ``domain`` (or None); with ``include_class``, class variables count too.

    Raises KeyError when ``domain`` is not a dataset SDTMIG 3.4 defines (see :func:`is_domain`).
    """
    var = _index(domain.upper()).get(name)
    if var is None and include_class:
        var = class_variable(domain, name)
    return var


def is_variable(domain: str, name: str, *, include_class: bool = False) -> bool:
    """True when SDTMIG 3.4 lists ``name`` for ``domain`` (or, with ``include_class``, the SDTM model allows it).

    Unknown dataset names are not an error here: they simply have no variables (False).
    """
    return is_domain(domain) and variable(domain, name, include_class=include_class) is not None


def variable_label(domain: str, name: str) -> str:
    """SDTMIG label of a variable (class variables included); KeyError when unknown."""
    var = variable(domain, name, include_class=True)
    if var is None:
        raise KeyError(f"{name} is not a variable of {domain}")
    return var.label


def variable_type(domain: str, name: str) -> Literal["Char", "Num"]:
    """SDTMIG type of a variable (class variables included); KeyError when unknown."""
    var = variable(domain, name, include_class=True)
    if var is None:
        raise KeyError(f"{name} is not a variable of {domain}")
    return var.type


def value_domain(domain: str, name: str) -> str:
    """SDTMIG "Described Value Domain" (e.g. ``ISO 8601 datetime or interval``), or ""."""
    meta = domain_meta(domain)
    if name in meta.value_domains:
        return meta.value_domains[name]
    entry = _class_index(meta.name).get(name)
    return entry[1] if entry else ""


def codelist_codes(domain: str, name: str) -> tuple[str, ...]:
    """NCI C-codes of the CT codelist(s) SDTMIG assigns to a variable (several for e.g. DSDECOD), or ()."""
    meta = domain_meta(domain)
    if name in meta.codelists:
        return meta.codelists[name]
    entry = _class_index(meta.name).get(name)
    return entry[2] if entry else ()
