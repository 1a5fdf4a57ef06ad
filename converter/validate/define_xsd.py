"""Validate a define.xml: the Define-XML 2.1 XSD set (shipped inside the installed odmlib package) plus checks
the schema cannot make: known def:Standard names and types, and OID references that resolve.

The XSD set is ``odmlib/schemas/define/2.1/define2-1-0.xsd``, which includes the ODM 1.3.2 schemas by relative
path (``../../odm/1.3.2/…``). Those paths resolve in the odmlib releases checked; should a release move a file,
:class:`_PackageResolver` finds it by name inside the package, and the network is never used. The parsed schema
is cached per process.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path
from urllib.parse import unquote, urlparse

from lxml import etree

from converter.validate.issues import Issue

ODM_NS = "http://www.cdisc.org/ns/odm/v1.3"
DEF_NS = "http://www.cdisc.org/ns/def/v2.1"
_NS = {"odm": ODM_NS, "def": DEF_NS}

#: def:Standard/@Name values of Define-XML CT codelist C170452 (Standard Name), by def:Standard/@Type.
STANDARD_NAMES = {
    "IG": frozenset({"ADaM-OCCDSIG", "ADaMIG", "ADaMIG-MD", "ADaMIG-NCA", "ADaMIG-popPK", "BIMO", "SDTMIG",
                     "SDTMIG-AP", "SDTMIG-MD", "SENDIG", "SENDIG-AR", "SENDIG-DART", "SENDIG-GENETOX"}),
    "CT": frozenset({"CDISC/NCI"}),
}

# (XPath of the referring attribute, what it must name, XPath of the definitions' identifiers)
_REFERENCES = (
    ("//odm:ItemRef/@ItemOID", "ItemDef", "//odm:ItemDef/@OID"),
    ("//odm:ItemRef/@MethodOID", "MethodDef", "//odm:MethodDef/@OID"),
    ("//odm:CodeListRef/@CodeListOID", "CodeList", "//odm:CodeList/@OID"),
    ("//def:ValueListRef/@ValueListOID", "def:ValueListDef", "//def:ValueListDef/@OID"),
    ("//def:WhereClauseRef/@WhereClauseOID", "def:WhereClauseDef", "//def:WhereClauseDef/@OID"),
    ("//odm:RangeCheck/@def:ItemOID", "ItemDef", "//odm:ItemDef/@OID"),
    ("//@def:StandardOID", "def:Standard", "//def:Standard/@OID"),
    ("//@def:CommentOID", "def:CommentDef", "//def:CommentDef/@OID"),
    ("//@def:ArchiveLocationID", "def:leaf", "//def:leaf/@ID"),
)


def odmlib_define_dir() -> Path:
    """The folder of the Define-XML 2.1 XSDs inside the installed odmlib package."""
    spec = importlib.util.find_spec("odmlib")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the odmlib package is not installed; it ships the Define-XML 2.1 schemas")
    return Path(next(iter(spec.submodule_search_locations))) / "schemas" / "define" / "2.1"


class _PackageResolver(etree.Resolver):
    """Resolve a schema file that is missing at its relative path by its file name inside odmlib's schemas."""

    def __init__(self, schemas_root: Path):
        super().__init__()
        self.schemas_root = schemas_root

    def resolve(self, system_url: str, public_id: str, context: object):  # type: ignore[override]
        parsed = urlparse(system_url)
        if parsed.scheme not in ("", "file"):
            return None
        wanted = Path(unquote(parsed.path))
        if wanted.is_file():
            return None
        # prefer the ODM 1.3.2 copy, which the Define-XML 2.1 schemas are written against
        found = sorted(self.schemas_root.rglob(wanted.name), key=lambda p: ("1.3.2" not in p.parts, str(p)))
        return self.resolve_filename(str(found[0]), context) if found else None


@cache
def load_define_schema(define_dir: Path | None = None) -> etree.XMLSchema:
    """The parsed Define-XML 2.1 schema (``define2-1-0.xsd`` in ``define_dir``, default: odmlib's), cached."""
    folder = define_dir or odmlib_define_dir()
    parser = etree.XMLParser(no_network=True, resolve_entities=False)
    parser.resolvers.add(_PackageResolver(odmlib_define_dir().parent.parent))
    return etree.XMLSchema(etree.parse(str(folder / "define2-1-0.xsd"), parser))


def _parse(source: Path | bytes, where: str) -> tuple[etree._ElementTree | None, list[Issue]]:
    parser = etree.XMLParser(no_network=True, resolve_entities=False)
    try:
        if isinstance(source, bytes):
            return etree.ElementTree(etree.fromstring(source, parser)), []
        return etree.parse(str(source), parser), []
    except etree.XMLSyntaxError as exc:
        line = exc.position[0] if exc.position else 0
        return None, [Issue("error", "define.syntax", f"not well-formed XML: {exc.msg}", f"{where}:{line}")]
    except OSError as exc:
        return None, [Issue("error", "define.read", f"cannot read the file: {exc}", where)]


def _semantic(doc: etree._ElementTree, where: str) -> list[Issue]:
    issues: list[Issue] = []
    for std in doc.iterfind(".//def:Standard", _NS):
        name, kind = std.get("Name", ""), std.get("Type", "")
        known = STANDARD_NAMES.get(kind, frozenset())
        if name not in known:
            other = next((t for t, names in STANDARD_NAMES.items() if name in names), None)
            hint = (f"it is a standard of Type {other!r}" if other else
                    f"known {kind or 'standard'} names: {', '.join(sorted(known or STANDARD_NAMES['IG']))}")
            issues.append(Issue("error", "define.standard",
                                f"def:Standard Name {name!r} (Type {kind!r}) is not a Define-XML standard name; {hint}",
                                f"{where}:{std.sourceline}"))
    for ref_path, target, def_path in _REFERENCES:
        defined = {str(v) for v in doc.xpath(def_path, namespaces=_NS)}
        for value in doc.xpath(ref_path, namespaces=_NS):
            if str(value) not in defined:
                owner = value.getparent()
                issues.append(Issue("error", "define.reference",
                                    f"{etree.QName(owner).localname}/@{etree.QName(value.attrname).localname} "
                                    f"{str(value)!r} names no {target}", f"{where}:{owner.sourceline}"))
    return issues


def validate_define(source: Path | bytes) -> list[Issue]:
    """Issues of a define.xml (a path or its bytes): XSD errors with line numbers, then semantic errors."""
    where = "define.xml" if isinstance(source, bytes) else str(source)
    doc, issues = _parse(source, where)
    if doc is None:
        return issues
    schema = load_define_schema()
    if not schema.validate(doc):
        issues.extend(Issue("error", "define.xsd", e.message, f"{where}:{e.line}") for e in schema.error_log)
    issues.extend(_semantic(doc, where))
    return issues
