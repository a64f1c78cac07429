"""Meta-tests of the documentation in ``docs/``: the references say what the code does, and links lead somewhere.

The reference pages mark each table the tests read with an HTML comment on its own line just above it (invisible
when rendered)::

    <!-- keys: budget -->
    | key | type | default | meaning |
    |---|---|---|---|
    | `epochs` | `float` | `1.0` | passes over the training set ... |

The first column names the key, field or option in backticks (several, comma-separated, for a command-line option
and its short form); a literal ``|`` inside a cell is written ``\\|``. Markers:

- ``keys: SECTION`` (``docs/suite-reference.md``): the keys of one part of a suite file. ``top`` (top-level tables),
  ``suite``, ``budget``, ``exclude``, ``models`` / ``tasks`` / ``strategies`` (the keys every such table takes
  besides its plugin's options), and ``task/NAME``, ``strategy/NAME``, ``source/NAME`` for the options of each
  built-in component; tables of declared options also give the type and the default exactly as
  :func:`option_row` writes them.
- ``fields: SECTION`` (``docs/records.md``): the fields of the record (``record``, ``params``, ``timing``,
  ``memory``, ``training``, ``evaluation``; type column = the dataclass annotation), of ``config``, ``plan.json``
  and the JSON report object.
- ``options: COMMAND`` (``docs/cli.md``): the arguments and options of one command (``harness`` for the group).

Run ``python tests/test_docs.py`` to print the generated option tables of every built-in component (paste them into
``docs/suite-reference.md`` after changing an option).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from harness.api.budget import BUDGET_OPTIONS, Budget
from harness.api.options import Option
from harness.planning import suite as suite_module
from harness.planning.search import SETTINGS as SEARCH_SETTINGS

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SUITE_REFERENCE = DOCS / "suite-reference.md"
RECORDS = DOCS / "records.md"
CLI = DOCS / "cli.md"

#: Pages other people are writing now: links to them are allowed while the file is missing. Remove once they exist.
PENDING: set[str] = set()

#: The keys every ``[models.NAME]``, ``[tasks.NAME]`` and ``[strategies.NAME]`` table takes besides its plugin's
#: options (``test_declaration_keys_are_what_load_suite_accepts`` checks them against ``load_suite``).
DECLARATION_KEYS: dict[str, tuple[str, ...]] = suite_module.DECLARATION_KEYS
#: Reference section prefix per component kind.
KIND_PREFIX = {"task": "task", "strategy": "strategy", "model source": "source"}

MARKER = re.compile(r"^<!--\s*(keys|fields|options):\s*(\S+)\s*-->$")
NAME = re.compile(r"`([^`]+)`")


# -- the generated tables -----------------------------------------------------------------------------------------
def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def default_text(option: Option) -> str:
    """The default column: ``required``, ``—`` (unset), or the default as TOML/JSON in backticks."""
    if option.required:
        return "required"
    if option.default is None:
        return "—"
    return f"`{_cell(json.dumps(option.default, ensure_ascii=False))}`"


def _html_safe(text: str) -> str:
    """``<`` and ``>`` outside code spans as entities (``<split>`` would render as an HTML tag)."""
    parts = text.split("`")
    return "`".join(p.replace("<", "&lt;").replace(">", "&gt;") if i % 2 == 0 else p for i, p in enumerate(parts))


def meaning_text(option: Option) -> str:
    text = _html_safe(option.help).rstrip(".")
    text = text[:1].upper() + text[1:] + "."
    if option.choices:
        text += " One of " + ", ".join(f"`{json.dumps(c, ensure_ascii=False)}`" for c in option.choices) + "."
    if option.minimum is not None:
        text += f" At least {option.minimum:g}."
    return _cell(text)


def option_row(option: Option) -> str:
    return f"| `{option.name}` | `{_cell(option.kind)}` | {default_text(option)} | {meaning_text(option)} |"


def option_table(section: str, options: Iterable[Option]) -> str:
    lines = [f"<!-- keys: {section} -->", "| key | type | default | meaning |", "|---|---|---|---|"]
    return "\n".join([*lines, *(option_row(o) for o in options)])


def builtin_host() -> Any:
    """The plugin host as installed, for the built-in components (third-party plugins are left out by the callers)."""
    from harness.api.host import PluginHost

    return PluginHost.load()


def builtin_components(kind: str) -> list[Any]:
    """Components of ``kind`` registered by the built-in plugins (modules of ``harness_plugins``)."""
    host = builtin_host()
    builtin = {p.name for p in host.plugins if p.module.startswith("harness_plugins.") and p.error is None}
    return [component for component, plugin in host.components(kind) if plugin in builtin]


def component_sections(kinds: Iterable[str] = tuple(KIND_PREFIX)) -> str:
    """The option tables of every built-in task, strategy and model source (``python tests/test_docs.py``)."""
    out = []
    for kind in kinds:
        prefix = KIND_PREFIX[kind]
        for component in builtin_components(kind):
            out.append(f"### `{component.name}`\n")
            facts = [f"{component.description[:1].upper()}{component.description[1:]}."]
            if hasattr(component, "families"):
                order = ("encoder", "decoder", "encoder-decoder")
                facts.append(f"Model families: {', '.join(f for f in order if f in component.families)}.")
            if kind == "strategy":
                defaults = ", ".join(f"`{k} = {v}`" for k, v in component.budget_defaults.items())
                facts.append(f"Trains: {'yes' if component.trains else 'no'}." + (
                    f" Budget defaults: {defaults}." if defaults else ""))
            if not component.options:
                facts.append("No options.")
            out.append(" ".join(facts) + "\n")
            if component.options:
                out.append(option_table(f"{prefix}/{component.name}", component.options) + "\n")
    return "\n".join(out)


# -- reading the docs ---------------------------------------------------------------------------------------------
def split_row(line: str) -> list[str]:
    inner = line.strip()
    inner = inner[1:] if inner.startswith("|") else inner
    inner = inner[:-1] if inner.endswith("|") and not inner.endswith("\\|") else inner
    return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", inner)]


def marked_tables(path: Path, kind: str) -> dict[str, list[list[str]]]:
    """``section -> rows`` (header and separator dropped) of every table marked ``<!-- kind: section -->``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    tables: dict[str, list[list[str]]] = {}
    for index, line in enumerate(lines):
        match = MARKER.match(line.strip())
        if not match or match.group(1) != kind:
            continue
        section = match.group(2)
        assert section not in tables, f"{path.name}: two tables are marked {kind}: {section}"
        j = index + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        rows = []
        while j < len(lines) and lines[j].lstrip().startswith("|"):
            rows.append(split_row(lines[j]))
            j += 1
        assert len(rows) >= 3, f"{path.name}: the table marked {kind}: {section} has no rows"
        tables[section] = rows[2:]
    return tables


def names(rows: list[list[str]]) -> list[str]:
    """The names in the first column of ``rows`` (every backticked word: ``--output``, ``-o``)."""
    return [name for row in rows for name in NAME.findall(row[0])]


def compare(what: str, documented: Iterable[str], actual: Iterable[str]) -> list[str]:
    documented, actual = list(documented), list(actual)
    problems = []
    missing = sorted(set(actual) - set(documented))
    extra = sorted(set(documented) - set(actual))
    repeated = sorted({n for n in documented if documented.count(n) > 1})
    if missing:
        problems.append(f"{what}: in the code but not documented: {', '.join(missing)}")
    if extra:
        problems.append(f"{what}: documented but not in the code: {', '.join(extra)}")
    if repeated:
        problems.append(f"{what}: documented twice: {', '.join(repeated)}")
    return problems


# -- (a) the suite reference --------------------------------------------------------------------------------------
def code_sections() -> dict[str, dict[str, Option | None]]:
    """Section -> key -> its :class:`Option` (``None`` for keys that are not declared options)."""
    sections: dict[str, dict[str, Option | None]] = {
        "top": dict.fromkeys(suite_module.TOP_LEVEL),
        "suite": {o.name: o for o in suite_module.SUITE_OPTIONS},
        "budget": {o.name: o for o in BUDGET_OPTIONS},
        "exclude": dict.fromkeys(suite_module.EXCLUDE_KEYS),
        "search": dict.fromkeys(SEARCH_SETTINGS),
    }
    sections.update({section: dict.fromkeys(keys) for section, keys in DECLARATION_KEYS.items()})
    for kind, prefix in KIND_PREFIX.items():
        for component in builtin_components(kind):
            if component.options:  # a component without options has no table
                sections[f"{prefix}/{component.name}"] = {o.name: o for o in component.options}
    return sections


def test_budget_options_are_the_budget_fields():
    assert [o.name for o in BUDGET_OPTIONS] == [f.name for f in dataclasses.fields(Budget)]


def test_suite_reference_documents_every_key_and_no_other():
    documented = marked_tables(SUITE_REFERENCE, "keys")
    code = code_sections()
    problems = compare("sections of docs/suite-reference.md", documented, code)
    for section in sorted(set(documented) & set(code)):
        problems += compare(f"keys: {section}", names(documented[section]), code[section])
    assert not problems, "\n".join(problems)


def test_suite_reference_gives_each_declared_option_its_type_and_default():
    documented = marked_tables(SUITE_REFERENCE, "keys")
    problems = []
    for section, options in code_sections().items():
        rows = {NAME.findall(row[0])[0]: row for row in documented.get(section, []) if NAME.findall(row[0])}
        for name, option in options.items():
            if option is None or name not in rows:
                continue
            row = rows[name]
            expected = [f"`{option.kind}`", default_text(option).replace("\\|", "|")]
            if row[1:3] != expected:
                problems.append(f"{section}.{name}: documented {row[1:3]}, the code says {expected}")
    assert not problems, "\n".join(problems) + "\n(regenerate the tables: python tests/test_docs.py)"


def test_declaration_keys_are_what_load_suite_accepts(tmp_path, toy_host):
    """Each model, task and strategy table takes its plugin key and ``budget``; the other sections' plugin key is
    refused (so the copy in :data:`DECLARATION_KEYS` matches ``load_suite``)."""
    from harness.errors import ValidationError
    from harness.planning.suite import load_suite

    (tmp_path / "data.txt").write_text("x\n", encoding="utf-8")
    base = {
        "models": '[models.m]\nsource = "toy-source"\n[models.m.budget]\nbatch_size = 4\n',
        "tasks": '[tasks.toy-task]\ntype = "toy-task"\ndata = "data.txt"\n[tasks.toy-task.budget]\nbatch_size = 4\n',
        "strategies": '[strategies.s]\ntype = "toy-strategy"\n[strategies.s.budget]\nbatch_size = 4\n',
    }
    path = tmp_path / "suite.toml"
    path.write_text("".join(base.values()), encoding="utf-8")
    suite = load_suite(path, toy_host)
    assert suite.models[0].budget == suite.tasks[0].budget == suite.strategies[0].budget == {"batch_size": 4}
    for section, keys in DECLARATION_KEYS.items():
        assert "budget" in keys
        plugin_key = "source" if section == "models" else "type"
        assert plugin_key in keys
        other = "type" if plugin_key == "source" else "source"
        head = base[section].splitlines()[0]
        text = "".join(base.values()).replace(head, f'{head}\n{other} = "x"', 1)
        path.write_text(text, encoding="utf-8")
        with pytest.raises(ValidationError, match=rf"{section}\.\S+\.{other}: unknown key"):
            load_suite(path, toy_host)


# -- (b) the record schema ----------------------------------------------------------------------------------------
def record_sections() -> dict[str, dict[str, str]]:
    """Section -> field -> the dataclass annotation (``""`` where the docs give no checked type)."""
    from harness.results.records import Compute, Evaluation, Memory, Params, Record, Runtime, Timing, Training

    sections = {
        name: {f.name: str(f.type) for f in dataclasses.fields(cls)}
        for name, cls in (
            ("record", Record), ("params", Params), ("timing", Timing), ("memory", Memory), ("training", Training),
            ("evaluation", Evaluation), ("compute", Compute), ("runtime", Runtime),
        )
    }
    for name, keys in other_record_keys().items():
        sections[name] = dict.fromkeys(keys, "")
    return sections


def other_record_keys() -> dict[str, list[str]]:
    """Keys of ``config``, ``plan.json`` and the JSON report, taken from the code that writes them."""
    import tempfile

    from harness_plugins.report_data import JsonReporter

    from harness.api.cells import Cell
    from harness.report.analysis import Comparison, Group, Table
    from harness.report.reporting import build_report
    from harness.report.rows import Rows
    from harness.report.stats import Describe, TestResult
    from harness.results.store import ResultStore

    cell = Cell(
        suite="s", task="t", task_type="t", task_options={}, strategy="s", strategy_type="s", strategy_options={},
        model="m", model_source="tiny", model_options={}, model_family="encoder", seed=0, budget=Budget(),
        trial={"search": "m/t/s", "index": 0, "trials": 1, "sampler": "grid", "metric": None, "values": {}},
    )
    config = cell.config()  # with the `trial` of a search's cells, documented as one field like `budget`
    whole = ("budget", "trial")
    flat = [k for k, v in config.items() if not isinstance(v, dict) or k in whole]
    flat += [f"{k}.{sub}" for k, v in config.items() if isinstance(v, dict) and k not in whole for sub in v]
    with tempfile.TemporaryDirectory() as tmp:
        store = ResultStore(Path(tmp))
        store.write_plan([cell], "suite.toml", "0" * 64)
        plan = json.loads((Path(tmp) / "plan.json").read_text(encoding="utf-8"))
        from harness.run.devices import cpu_device
        from harness.run.runner import SuiteRun
        from harness.run.scheduler import Interval

        run = SuiteRun(cells=[], store=store, devices=[cpu_device()], suite_path=Path("s.toml"), suite_sha256="0" * 64)
        run.intervals.append(Interval("c", "cpu", 0.0, 1.0, "ok"))
        makespan = run.makespan()
    report = json.loads(JsonReporter().render(build_report(Rows([]))))
    group = Group(model="m", task="t", strategy="s", metric=None, quality=None)
    table = Table(page_dim="model", page="m", rows_dim="task", cols_dim="strategy", row_values=(), col_values=(),
                  cells={}, axis="cols")
    comparison = Comparison(("t", "a"), ("t", "b"), TestResult("welch", 0.5, 0.1, 3), 0.1, 0.5)
    return {
        "config": flat,
        "plan": list(plan),
        "plan-cell": list(plan["cells"][0]),
        "report": list(report),
        "report-group": list(group.to_json()),
        "report-describe": [f.name for f in dataclasses.fields(Describe)],
        "report-table": list(table.to_json()),
        "report-comparison": list(comparison.to_json()),
        "makespan": list(makespan),
        "makespan-device": list(makespan["devices"][0]),
        "makespan-interval": list(makespan["intervals"][0]),
    }


def test_records_reference_documents_every_field_and_no_other():
    documented = marked_tables(RECORDS, "fields")
    code = record_sections()
    problems = compare("sections of docs/records.md", documented, code)
    for section in sorted(set(documented) & set(code)):
        problems += compare(f"fields: {section}", names(documented[section]), code[section])
    assert not problems, "\n".join(problems)


def test_records_reference_gives_each_record_field_its_type():
    documented = marked_tables(RECORDS, "fields")
    problems = []
    for section, fields in record_sections().items():
        for row in documented.get(section, []):
            found = NAME.findall(row[0])
            if found and fields.get(found[0]) and row[1] != f"`{fields[found[0]]}`":
                problems.append(f"{section}.{found[0]}: documented type {row[1]}, the code says `{fields[found[0]]}`")
    assert not problems, "\n".join(problems)


def test_records_reference_names_the_schema_versions():
    from harness_plugins.report_data import REPORT_SCHEMA_VERSION

    from harness.results.records import SCHEMA_VERSION

    text = RECORDS.read_text(encoding="utf-8")
    assert f"schema version {SCHEMA_VERSION}" in text
    assert f"report schema version {REPORT_SCHEMA_VERSION}" in text


# -- (c) the command line -----------------------------------------------------------------------------------------
def cli_params() -> dict[str, list[str]]:
    """Command (``harness`` for the group) -> its arguments (``SUITE``) and options (every spelling)."""
    import click

    from harness.cli import cli

    def spellings(command: click.Command) -> list[str]:
        out = []
        for param in command.params:
            if isinstance(param, click.Argument):
                out.append(param.human_readable_name)
            else:
                out += [*param.opts, *param.secondary_opts]
        return out

    return {"harness": spellings(cli), **{name: spellings(cmd) for name, cmd in cli.commands.items()}}


def test_cli_reference_documents_every_command_and_option_and_no_other():
    documented = marked_tables(CLI, "options")
    code = cli_params()
    problems = compare("commands of docs/cli.md", documented, code)
    for command in sorted(set(documented) & set(code)):
        problems += compare(f"options: {command}", names(documented[command]), code[command])
    assert not problems, "\n".join(problems)


def test_cli_reference_names_every_harness_environment_variable():
    sources = [*ROOT.joinpath("harness").rglob("*.py"), *ROOT.joinpath("plugins").rglob("*.py")]
    variables = {v for path in sources for v in re.findall(r"\bHARNESS_[A-Z_]+\b", path.read_text(encoding="utf-8"))}
    variables -= {"HARNESS_API_VERSION"}  # a module attribute plugins declare, not an environment variable
    text = CLI.read_text(encoding="utf-8")
    assert variables and not {v for v in variables if f"`{v}`" not in text}, sorted(variables)


# -- (d) links ----------------------------------------------------------------------------------------------------
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation but ``-`` and ``_`` dropped, spaces to ``-``."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            base = slug(line.lstrip("#"))
            name, n = base, 1
            while name in found:
                name, n = f"{base}-{n}", n + 1
            found.add(name)
    return found


def doc_links() -> list[tuple[Path, str]]:
    out = []
    for page in sorted(DOCS.glob("*.md")):
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        text = re.sub(r"`[^`\n]*`", "", text)
        out += [(page, target) for target in LINK.findall(text)]
    return out


def test_docs_exist():
    for page in ("index.md", "architecture.md", "suite-reference.md", "records.md", "cli.md"):
        assert (DOCS / page).is_file(), page


def test_every_relative_link_in_docs_leads_to_a_file_and_heading():
    problems = []
    for page, target in doc_links():
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        file_part, _, fragment = target.partition("#")
        path = (page.parent / file_part).resolve() if file_part else page
        if not path.exists():
            if file_part in PENDING and path.parent == DOCS:
                continue
            problems.append(f"{page.name}: link to {target}: no such file")
            continue
        if fragment and path.suffix == ".md" and fragment not in anchors(path):
            problems.append(f"{page.name}: link to {target}: no heading #{fragment} in {path.name}")
    assert not problems, "\n".join(problems)


def test_index_links_every_page():
    linked = {target.partition("#")[0] for page, target in doc_links() if page.name == "index.md"}
    pages = {p.name for p in DOCS.glob("*.md")} | PENDING
    assert pages - {"index.md"} <= linked, sorted(pages - {"index.md"} - linked)


if __name__ == "__main__":
    print(component_sections())
