"""The command line: a thin click layer over the library. User mistakes print one line and exit 2."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from harness import __version__
from harness.errors import HarnessError

if TYPE_CHECKING:  # pragma: no cover
    from harness.report.rows import Rows


def _fail(exc: HarnessError) -> None:
    for line in str(exc).splitlines():
        click.echo(f"error: {line}", err=True)
    sys.exit(exc.exit_code)


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HarnessError as exc:  # ValidationError included: one line per problem
            _fail(exc)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="harness")
def cli() -> None:
    """Compare tuning strategies for pretrained transformers: quality, time and memory, side by side."""


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.option("--check", is_flag=True,
              help="Exit 1 when any plugin failed, conflicts, registers nothing, or defines unknown or unmarked hooks.")
def plugins(as_json: bool, check: bool) -> None:
    """List installed plugins and the components they register."""
    from harness.api.inventory import plugin_inventory, render_inventory

    inventory = plugin_inventory()
    if as_json:
        click.echo(json.dumps(inventory, indent=2))
    else:
        click.echo(render_inventory(inventory))
    if check and inventory["problems"]:
        sys.exit(1)


@cli.command()
@click.argument("suite", type=click.Path(path_type=Path))
def validate(suite: Path) -> None:
    """Check a suite file (plugins, keys, types, files) without loading any model."""
    from harness.api.host import PluginHost
    from harness.planning.plan import budget_warnings, plan
    from harness.planning.suite import load_suite

    host = PluginHost.load()
    for problem in host.problems:
        click.echo(f"warning: {problem}", err=True)
    loaded = load_suite(suite, host)
    cells = plan(loaded, host)
    for warning in (*loaded.warnings, *budget_warnings(loaded, host)):
        click.echo(f"warning: {warning}", err=True)
    skipped = sum(1 for c in cells if c.skip_reason)
    searches = {c.trial["search"]: c.trial["trials"] for c in cells if c.trial is not None}
    searched = f"; {len(searches)} search(es) with {sum(searches.values())} trials in all" if searches else ""
    click.echo(
        f"{suite}: ok — {len(loaded.models)} model(s), {len(loaded.tasks)} task(s), "
        f"{len(loaded.strategies)} strateg{'y' if len(loaded.strategies) == 1 else 'ies'}, "
        f"{len(loaded.seeds)} seed(s): {len(cells)} cells ({skipped} skipped as unsupported){searched}"
    )


ONLY = click.option("--only", multiple=True, metavar="KEY=PATTERN[,...]",
                    help="Only cells matching this rule (keys task, strategy, model, seed; globs, as in [[exclude]]); "
                         "repeat for more rules: a cell matching any is selected.")  # fmt: skip
EXCLUDE = click.option("--exclude", multiple=True, metavar="KEY=PATTERN[,...]",
                       help="Leave out cells matching this rule (same syntax as --only); repeatable.")


@cli.command()
@click.argument("suite", type=click.Path(path_type=Path))
@click.option("--output", "-o", type=click.Path(path_type=Path), help="Results directory (default results/<suite name>).")
@click.option("--devices", help="Comma-separated GPU indices to use (e.g. 0,2), or 'cpu'. Default: all visible GPUs, else CPU.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=1, show_default=True, help="Cells run at once on CPU.")
@click.option("--executor", help="Executor plugin (default: the suite's, else 'local').")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=1), help="Per-cell time limit in seconds (overrides budget.timeout_s).")
@click.option("--rerun", is_flag=True, help="Run every cell again, even those already done.")
@click.option("--dry-run", is_flag=True, help="Print the plan (to run, done, skipped and why) and exit; loads no model.")
@click.option("--save-artifacts", is_flag=True, help="Save each cell's trained weights beside its record.")
@click.option("--address", metavar="auto|HOST:PORT",
              help="Ray cluster the ray executor connects to (sets RAY_ADDRESS). Default: a local Ray instance.")
@ONLY
@EXCLUDE
def run(suite: Path, address: str | None, only: tuple[str, ...], exclude: tuple[str, ...], **options: Any) -> None:
    """Run every task × strategy × model × seed cell of SUITE, each in its own process."""
    from harness.planning.select import Selection
    from harness.run.runner import RunOptions, run_suite

    if address is not None:
        if not address.strip():
            raise click.BadParameter("expected auto or HOST:PORT", param_hint="--address")
        os.environ["RAY_ADDRESS"] = address.strip()  # Ray's own variable, read by the ray executor
    selection = Selection.parse(only, exclude)
    sys.exit(run_suite(suite, RunOptions(address=address, selection=selection, **options)))


DIMENSIONS = ("task", "strategy", "model")
#: Formats of ``harness report --search``.
SEARCH_FORMATS = ("table", "markdown", "json")


@cli.command()
@click.argument("results", type=click.Path(path_type=Path))
@click.option("--format", "fmt", default="table", show_default=True,
              help="Reporter: table, markdown, latex, html, csv, json, tensorboard, or a plugin's.")
@click.option("--output", "-o", type=click.Path(path_type=Path),
              help="Write to this file instead of standard output (a directory for directory reporters).")
@click.option("--rows", default="task", show_default=True, type=click.Choice(DIMENSIONS), help="Row dimension.")
@click.option("--cols", default="strategy", show_default=True, type=click.Choice(DIMENSIONS),
              help="Column dimension; the third dimension gives one table per value.")
@click.option("--metric", help="Metric to compare instead of each task's primary metric.")
@click.option("--baseline", help="Reference of the Δ values (a strategy by default; `full` when present).")
@click.option("--alpha", default=0.05, show_default=True, type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Significance level of the † marks.")
@click.option("--resamples", default=10_000, show_default=True, type=click.IntRange(min=100),
              help="Resamples of the paired approximate randomisation test.")
@click.option("--plots", "plots_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Also write the plots (PNG and SVG) into this directory.")
@click.option("--search", is_flag=True,
              help="Show each hyperparameter search's trials (validation metric per setting) instead of the tables.")
@ONLY
@EXCLUDE
def report(
    results: Path, fmt: str, output: Path | None, rows: str, cols: str, metric: str | None, baseline: str | None,
    alpha: float, resamples: int, plots_dir: Path | None, only: tuple[str, ...], exclude: tuple[str, ...],
    search: bool,
) -> None:
    """Compare the records in RESULTS: rows are tasks, columns strategies, one table per model (by default)."""
    from harness.api.host import PluginHost
    from harness.planning.select import Selection
    from harness.report.reporting import ReportOptions, build_report
    from harness.report.rows import load_rows

    if search and fmt not in SEARCH_FORMATS:
        raise HarnessError(f"--search prints the formats {', '.join(SEARCH_FORMATS)}; got --format {fmt}")
    host = PluginHost.load()
    reporter = host.reporter(fmt)
    if reporter.output == "directory" and output is None:
        raise HarnessError(f"--format {fmt} writes a directory: give it with --output DIR")
    options = ReportOptions(rows=rows, cols=cols, metric=metric, baseline=baseline, alpha=alpha, resamples=resamples)
    selection = Selection.parse(only, exclude)
    loaded = _loaded(load_rows(results, selection.keeps if selection else None))
    built = build_report(loaded, options, results_dir=results, task_lookup=_task_lookup(host))
    if plots_dir is not None:
        from dataclasses import replace

        from harness.report.figures import write_report_plots

        try:
            written = write_report_plots(built, plots_dir)
        except OSError as exc:
            raise HarnessError(f"{plots_dir}: cannot write the plots ({exc.strerror or exc})") from None
        built = replace(built, plots=tuple(written))
        click.echo(f"{len(written)} plot files written to {plots_dir}", err=True)
    if search:
        from harness.report.search import render_searches

        _write_text(render_searches(built.searches, fmt), output)
        return
    if reporter.output == "directory":
        assert output is not None
        try:
            written = reporter.write(built, output)
        except OSError as exc:
            raise HarnessError(f"{output}: cannot write the report ({exc.strerror or exc})") from None
        click.echo(f"{len(written)} files written to {output}", err=True)
        return
    _write_text(reporter.render(built), output)


def _write_text(text: str, output: Path | None) -> None:
    """``text`` into ``output``, or to standard output without one."""
    if output:
        try:
            output.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
        except OSError as exc:
            raise HarnessError(f"{output}: cannot write the report ({exc.strerror or exc})") from None
    else:
        click.echo(text)


@cli.command()
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
@click.option("--format", "fmt", default="table", show_default=True, type=click.Choice(["table", "markdown", "csv", "json"]))
@click.option("--output", "-o", type=click.Path(path_type=Path), help="Write to this file instead of standard output.")
@click.option("--metric", help="Metric to compare instead of each task's primary metric.")
@click.option("--alpha", default=0.05, show_default=True, type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Significance level of the * marks (after Holm's correction).")
@click.option("--resamples", default=10_000, show_default=True, type=click.IntRange(min=100),
              help="Resamples of the paired approximate randomisation test.")
def compare(a: Path, b: Path, fmt: str, output: Path | None, metric: str | None, alpha: float, resamples: int) -> None:
    """Compare two results directories A and B cell by cell: Δ = B − A, significance, cost ratios."""
    from harness.api.host import PluginHost
    from harness.report import compare as comparing
    from harness.report.rows import load_rows

    host = PluginHost.load()
    rows_a, rows_b = _loaded(load_rows(a)), _loaded(load_rows(b))
    if metric is not None and not any(metric in (r.get("metrics") or {}) for r in [*rows_a, *rows_b]):
        raise HarnessError(f"--metric {metric}: no record of {a} or {b} has it")
    pairs = comparing.compare(rows_a, rows_b, metric=metric, task_lookup=_task_lookup(host), resamples=resamples)
    text = comparing.render(pairs, fmt, a=str(a), b=str(b), rows_a=rows_a, rows_b=rows_b, alpha=alpha,
                            resamples=resamples)
    if output:
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise HarnessError(f"{output}: cannot write the comparison ({exc.strerror or exc})") from None
    else:
        click.echo(text, nl=False)


def _loaded(rows: Rows) -> Rows:
    """``rows`` (:func:`harness.report.rows.load_rows`), its warnings (unreadable records) printed to stderr."""
    for warning in rows.warnings:
        click.echo(f"warning: {warning}", err=True)
    return rows


def _task_lookup(host: Any) -> Any:
    """Task type name -> the installed task plugin, or ``None`` (then significance falls back to seeds)."""

    def lookup(name: str) -> Any:
        try:
            return host.task(name)
        except HarnessError:
            return None

    return lookup


def main() -> None:
    cli(prog_name="harness")


if __name__ == "__main__":  # pragma: no cover
    main()
