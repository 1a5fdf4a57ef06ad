"""The ``casebridge`` command line: a thin click layer over :mod:`converter.api`."""

from __future__ import annotations

import sys
import traceback
from typing import Any

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
    results = api.check(list(inputs))
    bad = 0
    for result in results:
        for issue in result.issues:
            click.echo(str(issue))
        bad += not result.ok
    click.echo(f"{len(results) - bad} valid, {bad} invalid", err=True)
    sys.exit(EXIT_FAILED if bad else EXIT_OK)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="casebridge")
