"""Derive the project's SDTMIG 3.4 metadata, per-domain row schemas and SDTM rule table.

Writes, from the CDISC SDTMIG v3.4 ``Datasets.csv`` / ``Variables.csv`` (reference folder) and the project's
CT subset (``mappings/terminology/cdisc-ct``, written by ``tools/extract_ct.py``: run that first):

* ``schemas/sdtm/sdtmig-3.4.json``: every dataset (label, class, structure) with its variables in SDTMIG
  order (label, type, role, core, codelist C-codes, described value domain), and the general-observation
  class variables derived from them (see ``class_variables`` below).
* ``schemas/sdtm/domains/<DATASET>.schema.json``: a JSON Schema (draft 2020-12) for one row of each dataset.
* ``schemas/sdtm/rules.json``: the rules the SDTM validator applies, with the CDISC CORE / SDTMIG
  conformance / Pinnacle 21 ids they correspond to. Every id is checked against the reference copies
  (``cdisc/core-rules``) so a typo fails the build.

SDTMIG 3.4 ``Variables.csv`` lists each domain's variables with their names already resolved (``AESEQ``,
not ``--SEQ``), timing variables such as ``--DY``/``EPOCH`` included per domain. Variables the SDTM model
allows in any domain of a general observation class but that the IG does not list for a domain (e.g.
``CMLNKGRP``) are derived as the union, per class, of the generic (``--``) variables the IG lists for that
class's domains, plus the Identifier and Timing variables of all general-observation classes.

Usage::

    python tools/build_sdtm_metadata.py [--reference DIR] [--out DIR] [--ct DIR]

The output is deterministic (same inputs, same bytes).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from converter.mapping.terminology import load_terminology  # noqa: E402

DEFAULT_REFERENCE = ROOT.parent / "shared" / "reference"
DEFAULT_OUT = ROOT / "schemas" / "sdtm"
DEFAULT_CT = ROOT / "mappings" / "terminology"
IG_DIR = Path("cdisc") / "sdtmig-3.4"
CORE_SUMMARY = Path("cdisc") / "core-rules" / "sdtmig-3-4-core-rules-summary.json"
P21_RULES = Path("cdisc") / "core-rules" / "p21-rules-reference.csv"
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
GENERAL_CLASSES = ("Interventions", "Events", "Findings", "Findings About")
MAX_CHAR = 200  # bytes; XPT v5 limit on character values

# ISO 8601 as SDTMIG 3.4 (section 4.4) uses it: right-truncated partial dates/times, a single hyphen for an
# unknown component in the middle ("2003---15", "--12-15", "2003-12-15T-:15"), optional time zone,
# durations (PnYnMnDTnHnMnS or PnW, optionally negative for --ELTM) and intervals "start/end".
_YEAR, _MON, _DAY = r"(?:\d{4}|-)", r"(?:0[1-9]|1[0-2]|-)", r"(?:0[1-9]|[12]\d|3[01]|-)"
_HOUR, _MIN, _SEC = r"(?:[01]\d|2[0-3]|-)", r"(?:[0-5]\d|-)", r"(?:[0-5]\d(?:\.\d+)?)"
_TZ = r"(?:Z|[+-](?:[01]\d|2[0-3])(?::?[0-5]\d)?)?"
_DT = rf"{_YEAR}(?:-{_MON}(?:-{_DAY}(?:T{_HOUR}(?::{_MIN}(?::{_SEC})?)?{_TZ})?)?)?"
_NUM = r"\d+(?:[.,]\d+)?"
_DUR = rf"-?P(?=\d|T\d)(?:(?:{_NUM}Y)?(?:{_NUM}M)?(?:{_NUM}D)?(?:T(?=\d)(?:{_NUM}H)?(?:{_NUM}M)?(?:{_NUM}S)?)?|{_NUM}W)"
ISO_PATTERNS = {
    "ISO 8601 datetime or interval": rf"^(?!.*-$)(?:{_DT}(?:/(?:{_DT}|{_DUR}))?|{_DUR}/{_DT})$",
    "ISO 8601 duration": rf"^{_DUR}$",
    "ISO 8601 duration or interval": rf"^(?!.*-$)(?:{_DUR}|{_DT}/(?:{_DT}|{_DUR})|{_DUR}/{_DT})$",
}
NAME_PATTERN = r"^[A-Z][A-Z0-9_]{0,7}$"
TESTCD_PATTERN = r"^[A-Z_][A-Z0-9_]{0,7}$"


# --- the rule table ---------------------------------------------------------------------------------------
# kind: "schema" (a keyword of the row schemas; `schema` says which variables get which keyword),
# "dataset" / "row" / "study" (plain code in converter/validate/sdtm.py, keyed by id), or one of the
# declarative cross-record kinds the validator interprets from `params`:
#   record_implies          every `dataset` record matching `when` also matches `then`
#   subject_implies         a subject with a `dataset` record matching `when` has a `target` record matching `then`
#   record_matches_subject  for `dataset` records matching `when`, `variable` equals the subject's
#                           `target`.`target_variable` (ISO 8601 values compared at their shared precision)
# Conditions map a variable to a value, or to {"present": true|false}.
RULES: list[dict[str, Any]] = [
    {"id": "sdtm.dataset.unknown", "severity": "warning", "kind": "dataset",
     "title": "Dataset is not an SDTMIG 3.4 dataset, a SUPP-- dataset or a split of one: only generic checks apply"},
    {"id": "sdtm.dataset.empty", "severity": "warning", "kind": "dataset", "title": "Dataset has no records",
     "core": ["CORE-000579"], "sdtmig": ["CG0408"], "p21": ["SD0001"]},
    {"id": "sdtm.dataset.name", "severity": "error", "kind": "dataset",
     "title": "Dataset name must be 2-8 upper-case letters/digits (XPT v5 member name)",
     "core": ["CORE-000293"], "sdtmig": ["CG0205"]},
    {"id": "sdtm.dataset.label", "severity": "error", "kind": "dataset",
     "title": "Dataset label must be 1-40 characters (XPT v5)"},
    {"id": "sdtm.variable.unknown", "severity": "error", "kind": "dataset",
     "title": "Variable is not an SDTMIG 3.4 variable of the domain nor an allowed general-class variable",
     "core": ["CORE-000550"], "sdtmig": ["CG0013"], "p21": ["SD0058"]},
    {"id": "sdtm.variable.model", "severity": "info", "kind": "dataset",
     "title": "Variable is not listed for the domain in SDTMIG 3.4 but is a general-observation-class variable "
              "the SDTM model allows (declare it in define.xml)"},
    {"id": "sdtm.variable.name", "severity": "error", "kind": "schema",
     "title": "Variable name must be 1-8 characters: upper-case letters, digits, underscore; a letter first",
     "core": ["CORE-000182"], "sdtmig": ["CG0310"], "schema": {"propertyNames": {"pattern": NAME_PATTERN}}},
    {"id": "sdtm.variable.label.length", "severity": "error", "kind": "dataset",
     "title": "Variable label longer than 40 characters", "core": ["CORE-000019"], "sdtmig": ["CG0311"],
     "p21": ["SD1475"]},
    {"id": "sdtm.variable.label.mismatch", "severity": "warning", "kind": "dataset",
     "title": "Variable label differs from the SDTMIG 3.4 label"},
    {"id": "sdtm.variable.type", "severity": "error", "kind": "schema",
     "title": "Variable type (Char/Num) differs from SDTMIG 3.4, or a value is not of that type",
     "core": ["CORE-001082"], "sdtmig": ["CG0012"], "p21": ["SD0055"], "schema": {"type": "from SDTMIG Type"}},
    {"id": "sdtm.variable.required.missing", "severity": "error", "kind": "schema",
     "title": "Required variable not in the dataset", "core": ["CORE-000355"], "sdtmig": ["CG0014"],
     "p21": ["SD0056"], "schema": {"required": "Core = Req"}},
    {"id": "sdtm.variable.required.null", "severity": "error", "kind": "schema",
     "title": "Required variable is null", "core": ["CORE-000356"], "sdtmig": ["CG0014"], "p21": ["SD0002"],
     "schema": {"type": "no null for Core = Req", "minLength": 1}},
    {"id": "sdtm.dictionary.uncoded", "severity": "warning", "kind": "schema",
     "title": "Dictionary-derived Required variable null: the verbatim term is not coded yet (kept in --TERM, reported)",
     "p21": ["SD0002"], "params": {"variables": ["AEDECOD", "MHDECOD", "CEDECOD"]}},
    {"id": "sdtm.variable.required.unreported", "severity": "warning", "kind": "schema",
     "title": "Required variable null because the source report does not state it (not invented; reported)",
     "p21": ["SD0002"], "params": {"variables": ["COUNTRY"]}},
    {"id": "sdtm.variable.expected.missing", "severity": "warning", "kind": "dataset",
     "title": "Expected variable not in the dataset", "core": ["CORE-000334"], "sdtmig": ["CG0016"],
     "p21": ["SD0057"]},
    {"id": "sdtm.variable.order", "severity": "warning", "kind": "dataset",
     "title": "Variables are not in SDTMIG 3.4 order", "core": ["CORE-000852"], "sdtmig": ["CG0330"],
     "p21": ["SD1079"]},
    {"id": "sdtm.value.length", "severity": "error", "kind": "schema",
     "title": f"Character value longer than {MAX_CHAR} bytes (XPT v5 limit)", "p21": ["SD1096"],
     "schema": {"maxLength": MAX_CHAR}},
    {"id": "sdtm.value.ascii", "severity": "warning", "kind": "row",
     "title": "Character value has non-ASCII or non-printable characters (XPT v5 submissions are ASCII)",
     "p21": ["SD1029"]},
    {"id": "sdtm.iso8601", "severity": "error", "kind": "schema",
     "title": "Value is not ISO 8601 (date/time, duration or interval as SDTMIG 3.4 allows) or not a real date",
     "p21": ["SD0003", "SD1011"], "schema": {"pattern": "from SDTMIG Described Value Domain"}},
    {"id": "sdtm.domain.value", "severity": "error", "kind": "schema",
     "title": "DOMAIN must equal the domain the dataset belongs to", "core": ["CORE-000598"],
     "sdtmig": ["CG0413"], "p21": ["SD0004"], "schema": {"const": "dataset's DOMAIN"}},
    {"id": "sdtm.testcd.format", "severity": "error", "kind": "schema",
     "title": "--TESTCD / QNAM: at most 8 characters, upper-case letters, digits, underscore, no leading digit",
     "core": ["CORE-000220", "CORE-000221"], "sdtmig": ["CG0372", "CG0417"],
     "schema": {"pattern": TESTCD_PATTERN, "variables": ["--TESTCD", "QNAM"]}},
    {"id": "sdtm.test.length", "severity": "error", "kind": "schema",
     "title": "--TEST / QLABEL longer than 40 characters", "core": ["CORE-000199", "CORE-000222"],
     "sdtmig": ["CG0406", "CG0416"], "p21": ["SD0017", "SD1049"],
     "schema": {"maxLength": 40, "variables": ["--TEST", "QLABEL"], "exclude": ["IE", "TI"]}},
    {"id": "sdtm.armcd.length", "severity": "error", "kind": "schema",
     "title": "ARMCD / ACTARMCD longer than 20 characters", "core": ["CORE-000010", "CORE-000185"],
     "sdtmig": ["CG0153", "CG0123"], "p21": ["SD1004", "SD2001"],
     "schema": {"maxLength": 20, "variables": ["ARMCD", "ACTARMCD"]}},
    {"id": "sdtm.dthfl.value", "severity": "error", "kind": "schema", "title": "DTHFL must be Y or null",
     "core": ["CORE-000006"], "sdtmig": ["CG0131"], "schema": {"enum": ["Y"], "variables": ["DTHFL"]}},
    {"id": "sdtm.ct.nonextensible", "severity": "error", "kind": "schema",
     "title": "Value not in a non-extensible CDISC CT codelist", "p21": ["CT2001"],
     "schema": {"enum": "non-extensible codelists of the CT subset, plus params.sdtmig_values"},
     # values SDTMIG itself prescribes outside the codelist: RACE "MULTIPLE" (DM assumptions; CORE-000844
     # checks its SUPPDM records)
     "params": {"sdtmig_values": {"RACE": ["MULTIPLE"]}}},
    {"id": "sdtm.ct.extensible", "severity": "warning", "kind": "row",
     "title": "Value not in an extensible CDISC CT codelist and not declared as a sponsor extension",
     "p21": ["CT2002"]},
    {"id": "sdtm.ct.pair", "severity": "error", "kind": "row",
     "title": "Paired variables (--TESTCD/--TEST) do not name the same CT term", "p21": ["CT2003"],
     "params": {"pairs": [["--TESTCD", "--TEST"], ["--PARMCD", "--PARM"]]}},
    {"id": "sdtm.ct.unavailable", "severity": "info", "kind": "dataset",
     "title": "Variable's codelist is not in the project's CT subset: values not checked"},
    {"id": "sdtm.seq.unique", "severity": "error", "kind": "dataset",
     "title": "--SEQ is not unique within USUBJID", "core": ["CORE-000544"], "sdtmig": ["CG0028"],
     "p21": ["SD0005"]},
    {"id": "sdtm.dm.unique", "severity": "error", "kind": "dataset",
     "title": "DM must have one record per USUBJID", "core": ["CORE-000351"], "sdtmig": ["CG0151"],
     "p21": ["SD0083"]},
    {"id": "sdtm.usubjid.dm", "severity": "error", "kind": "study", "title": "USUBJID not in DM",
     "core": ["CORE-000201"], "sdtmig": ["CG0029"], "p21": ["SD0064"]},
    {"id": "sdtm.studyid.consistent", "severity": "error", "kind": "study",
     "title": "STUDYID differs from DM.STUDYID", "core": ["CORE-000172"], "sdtmig": ["CG0409"]},
    {"id": "sdtm.death.dthdtc_dthfl", "severity": "error", "kind": "record_implies",
     "title": "DTHDTC is populated but DTHFL is not Y", "core": ["CORE-000007"], "sdtmig": ["CG0435"],
     "p21": ["SD2004"],
     "params": {"dataset": "DM", "when": {"DTHDTC": {"present": True}}, "then": {"DTHFL": "Y"}}},
    {"id": "sdtm.death.dthfl_dthdtc", "severity": "warning", "kind": "record_implies",
     "title": "DTHFL is Y but DTHDTC is null", "core": ["CORE-000705"],
     "params": {"dataset": "DM", "when": {"DTHFL": "Y"}, "then": {"DTHDTC": {"present": True}}}},
    {"id": "sdtm.death.ds_dthfl", "severity": "error", "kind": "subject_implies",
     "title": "DS has DSDECOD DEATH but DM.DTHFL is not Y", "core": ["CORE-000252"], "sdtmig": ["CG0136"],
     "p21": ["SD1256"],
     "params": {"dataset": "DS", "when": {"DSDECOD": "DEATH"}, "target": "DM", "then": {"DTHFL": "Y"}}},
    {"id": "sdtm.death.dthfl_ds", "severity": "error", "kind": "subject_implies",
     "title": "DM.DTHFL is Y but DS has no DSDECOD DEATH record", "core": ["CORE-000679"],
     "params": {"dataset": "DM", "when": {"DTHFL": "Y"}, "target": "DS", "then": {"DSDECOD": "DEATH"}}},
    {"id": "sdtm.death.ds_date", "severity": "error", "kind": "record_matches_subject",
     "title": "DSSTDTC of the DEATH record differs from DM.DTHDTC", "core": ["CORE-000034"],
     "sdtmig": ["CG0069"], "p21": ["SD1317"],
     "params": {"dataset": "DS", "when": {"DSDECOD": "DEATH"}, "variable": "DSSTDTC", "target": "DM",
                "target_variable": "DTHDTC"}},
    {"id": "sdtm.ae.fatal_sdth", "severity": "error", "kind": "record_implies",
     "title": "AEOUT is FATAL but AESDTH is not Y", "p21": ["SD0090"],
     "params": {"dataset": "AE", "when": {"AEOUT": "FATAL"}, "then": {"AESDTH": "Y"}}},
    {"id": "sdtm.ae.sdth_fatal", "severity": "warning", "kind": "record_implies",
     "title": "AESDTH is Y but AEOUT is not FATAL", "p21": ["SD0091"],
     "params": {"dataset": "AE", "when": {"AESDTH": "Y"}, "then": {"AEOUT": "FATAL"}}},
    {"id": "sdtm.ae.fatal_dthfl", "severity": "error", "kind": "subject_implies",
     "title": "AE has AEOUT FATAL but DM.DTHFL is not Y", "core": ["CORE-000254"], "sdtmig": ["CG0134"],
     "p21": ["SD1254"],
     "params": {"dataset": "AE", "when": {"AEOUT": "FATAL"}, "target": "DM", "then": {"DTHFL": "Y"}}},
    {"id": "sdtm.ae.sdth_dthfl", "severity": "error", "kind": "subject_implies",
     "title": "AE has AESDTH Y but DM.DTHFL is not Y", "core": ["CORE-000253"], "sdtmig": ["CG0135"],
     "p21": ["SD1255"],
     "params": {"dataset": "AE", "when": {"AESDTH": "Y"}, "target": "DM", "then": {"DTHFL": "Y"}}},
    {"id": "sdtm.ae.fatal_date", "severity": "error", "kind": "record_matches_subject",
     "title": "AEENDTC of a fatal AE differs from DM.DTHDTC", "core": ["CORE-000841"], "p21": ["SD1347"],
     "params": {"dataset": "AE", "when": {"AEOUT": "FATAL"}, "variable": "AEENDTC", "target": "DM",
                "target_variable": "DTHDTC"}},
    {"id": "sdtm.dd.dthfl", "severity": "error", "kind": "subject_implies",
     "title": "DD has a record for the subject but DM.DTHFL is not Y", "core": ["CORE-000108"],
     "sdtmig": ["CG0133"], "p21": ["SD1253"],
     "params": {"dataset": "DD", "when": {}, "target": "DM", "then": {"DTHFL": "Y"}}},
    {"id": "sdtm.ref.dataset", "severity": "error", "kind": "study",
     "title": "RDOMAIN of RELREC/SUPP--/CO names a dataset not in the study (SUPP--: RDOMAIN must match the name)",
     "core": ["CORE-000384", "CORE-000457", "CORE-000502", "CORE-000538"],
     "sdtmig": ["CG0374", "CG0373", "CG0369", "CG0334"]},
    {"id": "sdtm.ref.idvar", "severity": "error", "kind": "study",
     "title": "IDVAR of RELREC/SUPP--/CO is not a variable of RDOMAIN, or IDVAR/IDVARVAL incomplete",
     "core": ["CORE-000712", "CORE-000916", "CORE-000953", "CORE-000134", "CORE-000135"],
     "sdtmig": ["CG0370", "CG0203", "CG0204"]},
    {"id": "sdtm.ref.record", "severity": "error", "kind": "study",
     "title": "No parent record in RDOMAIN with this USUBJID and IDVAR = IDVARVAL (RELREC/SUPP--/CO)",
     "core": ["CORE-000206"], "sdtmig": ["CG0371"], "p21": ["SD0077"]},
    {"id": "sdtm.relrec.reltype", "severity": "error", "kind": "dataset",
     "title": "RELTYPE must be null when IDVAR is a --SEQ (record-level relationship)",
     "core": ["CORE-000202"], "sdtmig": ["CG0419"], "p21": ["SD1026"]},
    {"id": "sdtm.relrec.relid", "severity": "error", "kind": "dataset",
     "title": "A RELID must appear on more than one RELREC record of the subject", "core": ["CORE-000484"],
     "sdtmig": ["CG0200"]},
    {"id": "sdtm.supp.unique", "severity": "error", "kind": "dataset",
     "title": "SUPP-- USUBJID/IDVAR/IDVARVAL/QNAM is not unique", "core": ["CORE-000203"],
     "sdtmig": ["CG0411"], "p21": ["SD0086"]},
    {"id": "sdtm.supp.qnam", "severity": "error", "kind": "dataset",
     "title": "QNAM is a standard variable name of the parent domain (use the variable instead)",
     "core": ["CORE-000783"], "sdtmig": ["CG0314"]},
    {"id": "sdtm.dy.value", "severity": "error", "kind": "study",
     "title": "--DY/--STDY/--ENDY differs from the study day computed from DM.RFSTDTC",
     "core": ["CORE-000529", "CORE-000552", "CORE-000553"], "sdtmig": ["CG0006", "CG0220", "CG0222"],
     "p21": ["SD1086", "SD1090", "SD1094"],
     "params": {"pairs": [["--DY", "--DTC"], ["--STDY", "--STDTC"], ["--ENDY", "--ENDTC"]],
                "reference": ["DM", "RFSTDTC"]}},
    {"id": "sdtm.dy.incomplete", "severity": "error", "kind": "study",
     "title": "--DY is populated although the date or DM.RFSTDTC is not a complete date",
     "core": ["CORE-000354", "CORE-000138", "CORE-000139"], "sdtmig": ["CG0007", "CG0221", "CG0223"],
     "p21": ["SD1085", "SD1089", "SD1093"]},
    {"id": "sdtm.dy.missing", "severity": "warning", "kind": "study",
     "title": "--DY is null although the date and DM.RFSTDTC are complete dates", "core": ["CORE-000853"],
     "p21": ["SD1084", "SD1088", "SD1092"]},
    {"id": "sdtm.read.error", "severity": "error", "kind": "read",
     "title": "A dataset file (XPT, Dataset-JSON) could not be read", "p21": ["SD0062"]},
    {"id": "sdtm.read.encoding", "severity": "info", "kind": "read",
     "title": "XPT text is not UTF-8; read as Windows-1252"},
    {"id": "sdtm.read.duplicate", "severity": "info", "kind": "read",
     "title": "The same dataset is present as XPT and Dataset-JSON; the XPT file was validated"},
    {"id": "sdtm.define.unchecked", "severity": "info", "kind": "read",
     "title": "define.xml is present but the Define-XML validator is not available"},
    {"id": "sdtm.ex.absent", "severity": "info", "kind": "study",
     "title": "EX not present: case report, no study treatment; anticancer therapy in CM",
     "core": ["CORE-000739"], "sdtmig": ["CG0407"], "p21": ["SD1109"]},
]


def read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a CDISC Library CSV export (UTF-8 with BOM)."""
    with path.open(encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


def _generic(name: str, prefix: str) -> str:
    return "--" + name[len(prefix):] if prefix and name.startswith(prefix) and len(name) > len(prefix) else name


def build_metadata(datasets_csv: Path, variables_csv: Path) -> dict[str, Any]:
    """The SDTMIG 3.4 metadata document (datasets, variables in order, class variables)."""
    datasets: dict[str, Any] = {}
    for row in read_csv(datasets_csv):
        name = row["Dataset Name"]
        datasets[name] = {"label": row["Dataset Label"], "class": row["Class"], "structure": row["Structure"],
                          "prefix": "" if name in ("SUPPQUAL", "RELREC", "RELSPEC", "RELSUB") else name,
                          "variables": []}
    for row in sorted(read_csv(variables_csv), key=lambda r: (r["Dataset Name"], int(r["Variable Order"]))):
        ds = datasets[row["Dataset Name"]]
        var: dict[str, Any] = {
            "name": row["Variable Name"], "label": row["Variable Label"], "type": row["Type"], "role": row["Role"],
            "core": row["Core"],
            "codelists": [c.strip() for c in row["CDISC CT Codelist Code(s)"].split(";") if c.strip()],
        }
        if row["Described Value Domain(s)"]:
            var["value_domain"] = row["Described Value Domain(s)"]
        generic = _generic(var["name"], ds["prefix"])
        if generic != var["name"]:
            var["generic"] = generic
        ds["variables"].append(var)
    return {
        "standard": "SDTMIG", "version": "3.4",
        "source": f"CDISC SDTMIG v3.4 {datasets_csv.name} (sha256 {_sha(datasets_csv)}), "
                  f"{variables_csv.name} (sha256 {_sha(variables_csv)})",
        "datasets": datasets,
        "class_variables": class_variables(datasets),
    }


def class_variables(datasets: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Per general-observation class, the variables the SDTM model allows beyond a domain's IG list."""
    seen: dict[str, dict[str, list[dict[str, Any]]]] = {c: {} for c in GENERAL_CLASSES}
    shared: dict[str, list[dict[str, Any]]] = {}
    for ds in datasets.values():
        if ds["class"] not in GENERAL_CLASSES:
            continue
        for var in ds["variables"]:
            key = var.get("generic", var["name"])
            if key in ("STUDYID", "DOMAIN", "USUBJID"):
                continue
            seen[ds["class"]].setdefault(key, []).append(var)
            if var["role"] in ("Identifier", "Timing"):
                shared.setdefault(key, []).append(var)
    out: dict[str, list[dict[str, Any]]] = {}
    for cls in GENERAL_CLASSES:
        pool = dict(seen[cls])
        if cls == "Findings About":
            for key, uses in seen["Findings"].items():
                pool.setdefault(key, uses)
        for key, uses in shared.items():
            pool.setdefault(key, uses)
        out[cls] = [_consensus(key, uses) for key, uses in sorted(pool.items())]
    return out


def _consensus(key: str, uses: list[dict[str, Any]]) -> dict[str, Any]:
    def common(field: str) -> Any:
        counts = Counter(json.dumps(u.get(field)) for u in uses)
        return json.loads(min(counts, key=lambda v: (-counts[v], v)))
    var = {"name": key, "label": common("label"), "type": common("type"), "role": common("role"), "core": "Perm",
           "codelists": common("codelists")}
    if common("value_domain"):
        var["value_domain"] = common("value_domain")
    return var


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


_ISO_DEFS = {"ISO 8601 datetime or interval": "iso8601-datetime-or-interval",
             "ISO 8601 duration": "iso8601-duration",
             "ISO 8601 duration or interval": "iso8601-duration-or-interval"}
_DEFAULT_RULES = {
    "type": "sdtm.variable.type", "maxLength": "sdtm.value.length", "minLength": "sdtm.variable.required.null",
    "pattern": "sdtm.iso8601", "enum": "sdtm.ct.nonextensible", "const": "sdtm.domain.value",
}


def _rule(rule_id: str) -> dict[str, Any]:
    return next(r for r in RULES if r["id"] == rule_id)


def _property(name: str, var: dict[str, Any], ct_values: dict[str, tuple[bool, list[str]]]) -> dict[str, Any]:
    """Schema of one variable of dataset ``name`` (``var`` with its name resolved)."""
    req = var["core"] == "Req"
    base = "string" if var["type"] == "Char" else "number"
    prop: dict[str, Any] = {"title": var["label"], "type": base if req else [base, "null"]}
    rule_of = {"type": _DEFAULT_RULES["type"]}
    if var["type"] == "Char":
        prop["maxLength"] = MAX_CHAR
        rule_of["maxLength"] = _DEFAULT_RULES["maxLength"]
        if req:
            prop["minLength"] = 1
            rule_of["minLength"] = _DEFAULT_RULES["minLength"]
    if var["name"] == "DOMAIN":
        prop["const"] = name
        rule_of["const"] = _DEFAULT_RULES["const"]
    if var.get("value_domain") in _ISO_DEFS:
        prop["$ref"] = f"#/$defs/{_ISO_DEFS[var['value_domain']]}"
        rule_of["pattern"] = _DEFAULT_RULES["pattern"]
    lists = [ct_values.get(c) for c in var["codelists"]]
    if lists and all(entry is not None and not entry[0] for entry in lists):
        extra = _rule("sdtm.ct.nonextensible")["params"]["sdtmig_values"].get(var["name"], [])
        prop["enum"] = sorted({v for entry in lists for v in entry[1]} | set(extra)) + ([] if req else [None])
        rule_of["enum"] = _DEFAULT_RULES["enum"]
    for rule in RULES:
        spec = rule.get("schema", {})
        if var.get("generic", var["name"]) in spec.get("variables", ()) and name not in spec.get("exclude", ()):
            for keyword, value in spec.items():
                if keyword not in ("variables", "exclude"):
                    prop[keyword] = value + ([] if req else [None]) if keyword == "enum" else value
                    rule_of[keyword] = rule["id"]
    prop["x-rule"] = rule_of
    return prop


def row_schema(name: str, ds: dict[str, Any], class_vars: list[dict[str, Any]],
               ct_values: dict[str, tuple[bool, list[str]]]) -> dict[str, Any]:
    """JSON Schema (2020-12) of one row of dataset ``name``; ``x-rule`` maps each keyword to its rule id.

    Properties: the SDTMIG variables of the dataset, then the general-observation-class variables the SDTM
    model allows in it (``x-class-variable``); any other variable is rejected.
    """
    properties = {var["name"]: _property(name, var, ct_values) for var in ds["variables"]}
    for raw in class_vars:
        var = dict(raw, name=ds["prefix"] + raw["name"][2:] if raw["name"].startswith("--") else raw["name"])
        if var["name"] not in properties:
            properties[var["name"]] = {**_property(name, var, ct_values), "x-class-variable": True}
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": f"urn:casebridge:schemas:sdtm:sdtmig-3.4:{name}",
        "title": f"{name} ({ds['label']}): one row, SDTMIG 3.4",
        "description": "Generated by tools/build_sdtm_metadata.py from SDTMIG 3.4 and the project's CDISC CT "
                       "subset. Null values are JSON null (an empty string is not null). x-rule names the rule "
                       "(schemas/sdtm/rules.json) each keyword implements; x-class-variable marks a variable the "
                       "SDTM model allows although SDTMIG 3.4 does not list it for the domain.",
        "type": "object",
        "propertyNames": {"pattern": NAME_PATTERN},
        "additionalProperties": False,
        "x-rule": {"propertyNames": "sdtm.variable.name", "required": "sdtm.variable.required.missing",
                   "additionalProperties": "sdtm.variable.unknown"},
        "properties": properties,
        "required": [v["name"] for v in ds["variables"] if v["core"] == "Req"],
        "$defs": {key: {"pattern": ISO_PATTERNS[domain]} for domain, key in _ISO_DEFS.items()},
    }


def check_rule_ids(rules: list[dict[str, Any]], reference: Path) -> list[str]:
    """Problems with the CORE / SDTMIG / P21 ids of the rule table, checked against the reference copies."""
    core = {r["core_id"]: r for r in json.loads((reference / CORE_SUMMARY).read_text(encoding="utf-8"))}
    p21 = {r["Pinnacle 21 ID"]: r for r in read_csv(reference / P21_RULES)}
    problems = []
    ids = [r["id"] for r in rules]
    problems += [f"duplicate rule id {i}" for i in sorted({i for i in ids if ids.count(i) > 1})]
    for rule in rules:
        known_cg: set[str] = set()
        for cid in rule.get("core", []):
            if cid not in core:
                problems.append(f"{rule['id']}: {cid} is not a CORE SDTMIG 3.4 rule")
            else:
                known_cg.update(core[cid]["sdtmig_rule_ids"])
        for pid in rule.get("p21", []):
            if pid not in p21:
                problems.append(f"{rule['id']}: {pid} is not in the P21 rule list")
            else:
                known_cg.update(s.strip() for s in p21[pid]["Publisher ID"].split(","))
        problems += [f"{rule['id']}: {cg} is not cited by its CORE/P21 rules" for cg in rule.get("sdtmig", [])
                     if cg not in known_cg]
    return problems


def write_json(path: Path, doc: Any) -> None:
    """Write JSON deterministically (insertion order kept, 1-space indent, UTF-8)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def build(reference: Path, out: Path, ct_folder: Path) -> int:
    """Write metadata, row schemas and rules; returns the number of datasets."""
    problems = check_rule_ids(RULES, reference)
    if problems:
        raise SystemExit("error: rule table:\n  " + "\n  ".join(problems))
    terminology = load_terminology(ct_folder)
    if not terminology.codelists:
        raise SystemExit(f"error: no CT codelists under {ct_folder / 'cdisc-ct'}: run tools/extract_ct.py first")
    ct_values = {cl.code: (cl.extensible, sorted(t.submission_value for t in cl.terms if not t.extension))
                 for cl in terminology.codelists.values()}
    meta = build_metadata(reference / IG_DIR / "Datasets.csv", reference / IG_DIR / "Variables.csv")
    meta["ct_version"] = terminology.ct_version
    write_json(out / "sdtmig-3.4.json", meta)
    domains = out / "domains"
    written = set()
    for name, ds in meta["datasets"].items():
        path = domains / f"{name}.schema.json"
        class_vars = meta["class_variables"].get(ds["class"], []) if ds["prefix"] else []
        write_json(path, row_schema(name, ds, class_vars, ct_values))
        written.add(path)
    for stale in domains.glob("*.schema.json"):
        if stale not in written:
            stale.unlink()
    write_json(out / "rules.json", {
        "description": "Rules applied by converter/validate/sdtm.py (generated by tools/build_sdtm_metadata.py). "
                       "core: CDISC CORE rule ids; sdtmig: SDTMIG conformance rule ids; p21: Pinnacle 21 ids.",
        "sdtmig_version": "3.4", "ct_version": terminology.ct_version, "rules": RULES})
    return len(meta["datasets"])


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE, help="the shared reference folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="schemas/sdtm output folder")
    parser.add_argument("--ct", type=Path, default=DEFAULT_CT, help="mappings/terminology (holding cdisc-ct/)")
    args = parser.parse_args(argv)
    n = build(args.reference, args.out, args.ct)
    print(f"{n} datasets, {len(RULES)} rules -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
