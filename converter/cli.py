"""The ``casebridge`` command line: a thin click layer over :mod:`converter.api`."""

from __future__ import annotations

import sys
import traceback
from contextlib import contextmanager
from typing import Any, Iterator

import click

from converter import __version__, api
from converter.errors import CaseBridgeError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


class _Group(click.Group):
    """Turns unexpected exceptions into exit code 3 with one line (``--debug`` shows the traceback)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CaseBridgeError as exc:
            for issue in exc.issues:
                click.echo(str(issue), err=True)
            ctx.exit(EXIT_FAILED)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except Exception as exc:  # noqa: BLE001 - the last line of defence for an ETL job
            if ctx.obj and ctx.obj.get("debug"):
                traceback.print_exc()
            click.echo(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", err=True)
            ctx.exit(EXIT_INTERNAL)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "CASEBRIDGE"})
@click.version_option(__version__, prog_name="casebridge")
@click.option("--debug", is_flag=True, help="Show tracebacks of internal errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """CaseBridge: structured oncology case reports to HL7 FHIR (mCODE) and CDISC SDTM.

    \b
    Exit codes: 0 all good; 1 some inputs failed reading, mapping or validation;
                2 usage error; 3 internal error.

    \b
    Example:
      casebridge convert samples/lcnec-cadonilimab-anlotinib.yaml --out out/
      casebridge validate out/
    """
    ctx.obj = {"debug": debug}


@cli.command()
@click.argument("inputs", nargs=-1, required=True)
def check(inputs: tuple[str, ...]) -> None:
    """Check case files against the case-report schema and semantic rules.

    Prints one line per problem; exits 0 when every case is valid, 1 otherwise.

    \b
    Example:
      casebridge check samples/*.yaml
    """
    with _usage_errors():
        results = api.check(list(inputs))
    bad = 0
    for result in results:
        for issue in result.issues:
            click.echo(str(issue))
        bad += not result.ok
    click.echo(f"{len(results) - bad} valid, {bad} invalid", err=True)
    sys.exit(EXIT_FAILED if bad else EXIT_OK)


@contextmanager
def _usage_errors() -> Iterator[None]:
    """A CaseBridgeError about the command line itself (rules ``usage.*``) exits 2, like click's own usage errors."""
    try:
        yield
    except CaseBridgeError as exc:
        if exc.issues and all(i.rule.startswith("usage.") for i in exc.issues):
            raise click.UsageError("; ".join(i.message for i in exc.issues)) from None
        raise


def _csv(value: str, allowed: tuple[str, ...], name: str) -> list[str]:
    items = [v.strip().lower() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise click.BadParameter(f"{', '.join(bad) or 'nothing'}: choose from {', '.join(allowed)} (comma-separated)",
                                 param_hint=name)
    return items


@cli.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", "-o", type=click.Path(file_okay=False), required=True, help="Output folder.")
@click.option("--to", default="fhir,sdtm", show_default=True, help="What to produce: fhir, sdtm or both.")
@click.option("--fhir-bundle", type=click.Choice(["collection", "transaction"]), default="collection", show_default=True,
              help="Bundle type; transaction uses conditional creates so reruns do not duplicate on a server.")
@click.option("--fhir-ndjson", is_flag=True, help="Also write fhir/ndjson/<ResourceType>.ndjson for all cases.")
@click.option("--sdtm-format", default="xpt,json", show_default=True, help="SDTM formats: xpt, json, csv (define.xml always).")
@click.option("--study-id", default="CASEBRIDGE", show_default=True, help="STUDYID of the SDTM study all cases form.")
@click.option("--sdtm-memory", type=click.IntRange(1, None), metavar="MB",
              help="SDTM rows held in memory before they move to temporary files under OUT (estimated)  [default: 256]")
@click.option("--mappings", type=click.Path(file_okay=False, exists=True), help="A mapping folder of your own.")
@click.option("--jobs", "-j", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Worker processes (output is identical to --jobs 1).")
@click.option("--fail-fast", is_flag=True, help="Stop at the first input that fails.")
@click.option("--deep", is_flag=True, help="Also parse every resource with the fhir.resources models (slower).")
@click.option("--created", type=click.DateTime(["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"]),
              help="Creation timestamp stamped into define.xml, Dataset-JSON and XPT (default: SOURCE_DATE_EPOCH or now).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary.")
def convert(inputs: tuple[str, ...], out: str, to: str, fhir_bundle: str, fhir_ndjson: bool, sdtm_format: str,
            study_id: str, sdtm_memory: int | None, mappings: str | None, jobs: int, fail_fast: bool, deep: bool, created: Any, quiet: bool) -> None:
    """Convert case reports to FHIR bundles and an SDTM study, validated before they are written.

    INPUTS are files, folders, globs or - (stdin: YAML, JSON or NDJSON with one case per line).
    Bad cases go to OUT/quarantine/ with their errors; the rest is written. OUT/report.json lists
    counts, every issue with its location, unmapped facts and timings.

    \b
    Example:
      casebridge convert samples/lcnec-cadonilimab-anlotinib.yaml --out out/
      casebridge convert cases/ --out out/ --jobs 2 --fhir-ndjson --sdtm-format xpt,json,csv
    """
    show = not quiet and sys.stderr.isatty()
    bar = click.progressbar(length=0, label="converting", file=sys.stderr) if show else None
    done = [0]

    def progress(_result: Any) -> None:
        done[0] += 1
        if bar is not None:
            bar.length = max(bar.length or 0, done[0])
            bar.update(1)

    with _usage_errors():
        report = api.convert(list(inputs), out, to=_csv(to, ("fhir", "sdtm"), "--to"), fhir_bundle=fhir_bundle,
                             fhir_ndjson=fhir_ndjson, sdtm_formats=_csv(sdtm_format, ("xpt", "json", "csv"), "--sdtm-format"),
                             study_id=study_id, sdtm_memory_mb=sdtm_memory, mappings=mappings, jobs=jobs, fail_fast=fail_fast, deep=deep,
                             created=created, progress=progress)
    if bar is not None:
        bar.render_finish()
    errors = [i for i in report.issues if i.severity == "error"]
    if not quiet:
        for issue in errors[:20]:
            click.echo(str(issue), err=True)
        if len(errors) > 20:
            click.echo(f"... {len(errors) - 20} more errors in {out}/report.json", err=True)
        counts = ", ".join(f"{k} {v}" for k, v in sorted(report.domain_counts.items()))
        click.echo(f"{report.converted} converted, {report.failed} quarantined; "
                   f"{sum(report.resource_counts.values())} FHIR resources; SDTM rows: {counts or 'none'}; "
                   f"{report.timings.get('total', 0):.2f}s -> {out}", err=True)
    sys.exit(EXIT_OK if report.ok else EXIT_FAILED)


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=False))
@click.option("--deep", is_flag=True, help="Also parse FHIR resources with the fhir.resources models.")
@click.option("--mappings", type=click.Path(file_okay=False, exists=True), help="Mapping folder whose terminology tables to use.")
@click.option("--json", "as_json", is_flag=True, help="Print the issues as one JSON document.")
def validate(paths: tuple[str, ...], deep: bool, mappings: str | None, as_json: bool) -> None:
    """Validate FHIR (bundles, resources, NDJSON) or SDTM (XPT / Dataset-JSON + define.xml) made elsewhere.

    Exits 0 when no errors were found, 1 otherwise.

    \b
    Example:
      casebridge validate out/                 # a whole conversion output
      casebridge validate received/sdtm/ bundle.json
    """
    issues = api.validate(list(paths), deep=deep, mappings=mappings)
    if as_json:
        import orjson

        click.echo(orjson.dumps([i.to_dict() for i in issues], option=orjson.OPT_INDENT_2).decode())
    else:
        for issue in issues:
            click.echo(str(issue))
    errors = sum(1 for i in issues if i.severity == "error")
    click.echo(f"{errors} error(s), {len(issues) - errors} warning(s)/note(s)", err=True)
    sys.exit(EXIT_FAILED if errors else EXIT_OK)


@cli.command()
@click.argument("case", type=click.Path(exists=True, dir_okay=False))
@click.argument("field")
@click.option("--mappings", type=click.Path(file_okay=False, exists=True), help="A mapping folder of your own.")
def explain(case: str, field: str, mappings: str | None) -> None:
    """Show where one fact of a case lands in FHIR and SDTM, and through which mapping line.

    \b
    Example:
      casebridge explain samples/lcnec-cadonilimab-anlotinib.yaml adverse_events[0].grade
    """
    entries = api.explain(case, field, mappings)
    if not entries:
        click.echo(f"{field}: no mapping rule reads this field (it is reported as unmapped)")
        sys.exit(EXIT_FAILED)
    for e in entries:
        if e["standard"] == "FHIR":
            click.echo(f"{e['source']} -> FHIR {e['resource']} {e['element']}  ({e['mapping']}, rule {e['rule']})")
        else:
            click.echo(f"{e['source']} -> SDTM {e['domain']}.{e['variable']} [{e['row']}]  ({e['mapping']}, rule {e['rule']})")


@cli.group()
def mappings() -> None:
    """Tools for the people who maintain mappings/: lint, test, doc.

    \b
    Example:
      casebridge mappings lint && casebridge mappings test
    """


@mappings.command("lint")
@click.argument("path", required=False, type=click.Path(file_okay=False, exists=True))
def mappings_lint(path: str | None) -> None:
    """Check every mapping file and terminology table; all problems at once, file:line:column.

    \b
    Example:
      casebridge mappings lint            # the shipped mappings/
      casebridge mappings lint my-mappings/
    """
    issues = api.lint_mappings(path)
    for issue in issues:
        click.echo(str(issue))
    errors = sum(1 for i in issues if i.severity == "error")
    click.echo(f"{errors} problem(s)", err=True)
    sys.exit(EXIT_FAILED if errors else EXIT_OK)


@mappings.command("test")
@click.argument("path", required=False, type=click.Path(file_okay=False, exists=True))
def mappings_test(path: str | None) -> None:
    """Run the tests: blocks of the mapping files and print a field-level diff for each failure.

    \b
    Example:
      casebridge mappings test
    """
    outcomes = api.test_mappings(path)
    failed = [o for o in outcomes if not o.passed]
    for o in failed:
        click.echo(f"FAIL {o.file}:{o.line} {o.name}")
        for d in o.diffs:
            click.echo(f"    {d}")
    click.echo(f"{len(outcomes) - len(failed)} passed, {len(failed)} failed")
    sys.exit(EXIT_FAILED if failed else EXIT_OK)


@mappings.command("doc")
@click.argument("path", required=False, type=click.Path(file_okay=False, exists=True))
@click.option("--out", "-o", type=click.Path(file_okay=False), required=True, help="Folder for mapping-spec.md/.html.")
def mappings_doc(path: str | None, out: str) -> None:
    """Write a readable specification (Markdown and self-contained HTML) for sign-off.

    \b
    Example:
      casebridge mappings doc --out spec/
    """
    for written in api.document_mappings(out, path):
        click.echo(str(written))


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="casebridge")
