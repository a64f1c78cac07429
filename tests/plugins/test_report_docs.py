"""The ``latex`` and ``html`` reporters: well-formed output (a LaTeX compile where an engine is installed, a strict
HTML tree always), every text escaped, the table content, the plots inlined, nothing loaded from outside, no torch."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from harness_plugins.report_html import HtmlReporter
from harness_plugins.report_latex import LatexReporter, latex_cell, latex_escape, standalone_document

from harness.api.components import Reporter
from harness.report.figures import write_report_plots
from harness.report.reporting import Report, ReportOptions, build_report
from harness.report.rows import Rows
from harness.report.tables import CellText

MIB = 2**20
ERROR = "RuntimeError: bad_value 50% & $5 #3 {x} ~ ^ \\path [1] | <script>alert('x')</script> ± — é"
SKIP = "needs_gpu: 100% of_memory & more"
ZERO_SHOT_SKIP = "encoder_only: no generation {head} #2"
MODEL = "org/tiny_bert"
OTHER_MODEL = "org-tiny.bert"  # the same LaTeX label slug as MODEL: the labels must still differ


def row(task: str, strategy: str, seed: int, status: str = "ok", value: float = 0.0, model: str = MODEL,
        error: str | None = None) -> dict[str, Any]:
    """A record dict as :meth:`harness.results.records.Record.to_json` writes it (the fields the reports read)."""
    ok = status == "ok"
    metric = {"ner_wnut": "f1", "sst2": "accuracy"}[task]
    trains = not strategy.startswith(("few_shot", "zero_shot"))
    trainable = (1000 if strategy == "full" else 100) if trains else 0
    return {
        "key": f"{model}|{task}|{strategy}|{seed}", "task": task, "strategy": strategy, "model": model,
        "seed": seed, "status": status, "error": error or {"failed": ERROR, "skipped": SKIP}.get(status),
        "metrics": {metric: value, "loss": 1.0} if ok else {}, "primary_metric": metric if status != "skipped" else None,
        "params": {"trainable": trainable, "trainable_pct": trainable / 10, "stored_bytes": 4 * trainable} if ok else {},
        "timing": {"train_s": 10.0 + seed, "train_samples_per_s": 50.0 + seed} if ok and trains else {},
        "memory": {"peak_rss_bytes": (300 + 10 * seed) * MIB} if ok else {},
        "config": {}, "env": {"torch": "2.13", "python": "3.12.1", "hostname": "host_1 & <b>"},
    }


def make_rows() -> list[dict[str, Any]]:
    """Two tasks × full, lora, a 2-point k-shot curve and an all-skipped zero_shot on MODEL (lora: one failed seed on
    ner_wnut, all failed on sst2; few_shot@k=1 skipped on sst2), and one seed of sst2 on OTHER_MODEL."""
    out = []
    for task, base in (("ner_wnut", 0.80), ("sst2", 0.90)):
        for seed in range(3):
            jitter = (seed - 1) * 0.004
            out.append(row(task, "full", seed, value=base + jitter))
            out.append(row(task, "few_shot@k=3", seed, value=base - 0.3 + jitter))
            out.append(row(task, "few_shot@k=1", seed, value=base - 0.4 + jitter) if task == "ner_wnut"
                       else row(task, "few_shot@k=1", seed, status="skipped"))
            out.append(row(task, "lora", seed, value=base - 0.002 + 2 * jitter) if task == "ner_wnut" and seed < 2
                       else row(task, "lora", seed, status="failed"))
            out.append(row(task, "zero_shot", seed, status="skipped", error=ZERO_SHOT_SKIP))
    out += [row("sst2", "full", 0, value=0.91, model=OTHER_MODEL), row("sst2", "lora", 0, value=0.89, model=OTHER_MODEL)]
    return out


OPTIONS = ReportOptions(resamples=200)


@pytest.fixture(scope="module")
def report() -> Report:
    return build_report(Rows(make_rows(), pending=2), OPTIONS)


@pytest.fixture(scope="module")
def latex(report: Report) -> str:
    return LatexReporter().render(report)


@pytest.fixture(scope="module")
def page(report: Report) -> str:
    return HtmlReporter().render(report)


# -- LaTeX checks ----------------------------------------------------------------------------------------------

_TOKEN = re.compile(r"\\(?:begin|end)\{[^}]*\}|\\[A-Za-z]+|\\.|.", re.S)


def body_of(tex: str) -> str:
    """``tex`` without its comment lines (the fragment writes comments only as whole lines)."""
    return "\n".join(line for line in tex.splitlines() if not line.lstrip().startswith("%"))


def check_braces(tex: str) -> None:
    depth = 0
    for token in _TOKEN.findall(tex):
        depth += {"{": 1, "}": -1}.get(token, 0)
        assert depth >= 0, "a } closes nothing"
    assert depth == 0, f"{depth} unclosed {{"


def check_environments(tex: str) -> list[str]:
    """Every \\begin{X} closed by \\end{X} in order; the environments opened, in order."""
    stack, opened = [], []
    for token in _TOKEN.findall(tex):
        if match := re.fullmatch(r"\\(begin|end)\{([^}]*)\}", token):
            if match[1] == "begin":
                stack.append(match[2])
                opened.append(match[2])
            else:
                assert stack and stack[-1] == match[2], f"\\end{{{match[2]}}} closes {stack[-1:]}"
                stack.pop()
    assert not stack, f"unclosed environments {stack}"
    return opened


def split_top(text: str, separator: str) -> list[str]:
    """``text`` split at ``separator`` tokens (``\\\\`` or ``&``) outside braces; escapes are no separators."""
    parts, depth, current = [""], 0, []
    for token in _TOKEN.findall(text):
        depth += {"{": 1, "}": -1}.get(token, 0)
        if token == separator and depth == 0:
            parts[-1] = "".join(current)
            parts.append("")
            current = []
        else:
            current.append(token)
    parts[-1] = "".join(current)
    return parts


def check_tabulars(tex: str) -> list[tuple[str, int]]:
    """Each tabular: booktabs rules, and every row has the ``&`` count its column spec implies; (spec, rows)."""
    found = []
    for match in re.finditer(r"\\begin\{tabular\}\{([^}]*)\}(.*?)\\end\{tabular\}", tex, re.S):
        spec, body = match[1], match[2]
        assert "\\begin{tabular}" not in body
        columns = len(re.findall(r"[lcr]|p\{[^}]*\}", re.sub(r"@\{[^}]*\}", "", spec)))
        for rule in ("\\toprule", "\\midrule", "\\bottomrule"):
            assert body.count(rule) == 1, rule
        rows = [re.sub(r"\\(toprule|midrule|bottomrule)", "", part).strip() for part in split_top(body, "\\\\")]
        rows = [r for r in rows if r]
        for line in rows:
            assert len(split_top(line, "&")) == columns, f"{spec}: {line}"
        found.append((spec, len(rows)))
    return found


def check_no_raw_specials(tex: str) -> None:
    """Outside escapes: no % # _ ~ < > |, & only inside tabulars, ^ only as ^{\\dagger}, balanced $, ASCII only."""
    text = "".join(t for t in _TOKEN.findall(tex) if not t.startswith("\\"))
    outside = re.sub(r"\\begin\{tabular\}.*?\\end\{tabular\}", "", tex, flags=re.S)
    assert "&" not in _TOKEN.findall(outside), "raw & outside a tabular"
    for char in "%#_~<>|":
        assert char not in text, f"raw {char!r}"
    assert text.count("^") == tex.count("^{\\dagger}"), "raw ^"
    assert text.count("$") % 2 == 0, "unbalanced $"
    assert tex.isascii(), sorted({c for c in tex if not c.isascii()})


def test_latex_fragment_is_well_formed(latex, report):
    assert latex.splitlines()[1] == "% requires: booktabs, amsmath, graphicx"
    tex = body_of(latex)
    check_braces(tex)
    assert check_environments(tex) == ["table", "tabular"] * (2 * len(report.tables))
    tabulars = check_tabulars(tex)
    # quality: l + one c per column of the table; cost: l l + six numbers.
    assert [spec for spec, _ in tabulars[::2]] == ["l" + "c" * len(t.col_values) for t in report.tables]
    assert {spec for spec, _ in tabulars[1::2]} == {"llrrrrrr"}
    assert [rows for _, rows in tabulars[::2]] == [1 + len(t.row_values) for t in report.tables]
    check_no_raw_specials(tex)
    assert "\\pm" in tex
    labels = re.findall(r"\\label\{([^}]*)\}", tex)
    assert len(labels) == len(set(labels)) == 4
    assert labels[:2] == ["tab:harness-org-tiny-bert", "tab:harness-org-tiny-bert-cost"]
    assert len(re.findall(r"\\caption\{", tex)) == 4


def test_latex_marks_best_not_worse_delta_n_and_footnotes(latex):
    first = body_of(latex).split("\\end{table}")[0]
    assert "$\\mathbf{0.8000 \\pm 0.0040}$" in first  # best of the ner_wnut row
    assert "$0.7940 \\pm 0.0057^{\\dagger}$" in first  # lora: not significantly worse, 2 of 3 seeds
    assert "{\\scriptsize $n{=}2$}" in first and "n{=}3" not in first  # n only where it is not the usual 3
    assert "{\\scriptsize ($-0.3000$)}" in first  # Δ to full
    assert "n = 3 unless given" in first and "difference of the means to full" in first
    assert "ner\\_wnut (f1)" in first and "few\\_shot@k=3" in first
    # footnotes under the tabular, the error and the skip reasons escaped
    notes = first.split("\\end{tabular}")[1]
    assert notes.startswith("\n\\par\\smallskip\\footnotesize")
    assert ("{[}1{]} failed: RuntimeError: bad\\_value 50\\% \\& \\$5 \\#3 \\{x\\} \\textasciitilde{} "
            "\\textasciicircum{} \\textbackslash{}path {[}1{]} \\textbar{} \\textless{}script\\textgreater{}") in notes
    assert "needs\\_gpu: 100\\% of\\_memory \\& more" in notes
    assert "encoder\\_only: no generation \\{head\\} \\#2" in first
    assert "2 planned cells have no record yet." in notes


def test_latex_single_seed_table_has_plain_values(latex):
    other = body_of(latex).split("\\end{table}")[2]
    assert "\\label{tab:harness-org-tiny-bert-2}" in other
    assert "$\\mathbf{0.9100}$" in other and "$0.8900$" in other  # one seed: no ± std


@pytest.mark.parametrize(("text", "escaped"), [
    ("a_b 50% & $x #1", "a\\_b 50\\% \\& \\$x \\#1"),
    ("{x} ~y ^z \\w", "\\{x\\} \\textasciitilde{}y \\textasciicircum{}z \\textbackslash{}w"),
    ("[1] <b>|", "{[}1{]} \\textless{}b\\textgreater{}\\textbar{}"),
    ("0.80 ± 0.01 Δ −0.1 † ≥ …", "0.80 $\\pm$ 0.01 $\\Delta$ $-$0.1 $^{\\dagger}$ $\\geq$ \\ldots{}"),
    ("--metric  x\n\ty", "-{}-metric x y"),
    ("café 中 \x07", "cafe ? "),
])
def test_latex_escape(text, escaped):
    assert latex_escape(text) == escaped


def test_latex_cell_forms():
    assert latex_cell(CellText(value="0.8123 ± 0.0123", n=3, best=True), 3) == "$\\mathbf{0.8123 \\pm 0.0123}$"
    assert latex_cell(CellText(value="0.80 ± 0.01", n=2, not_worse=True, delta="−0.0123"), 3) == (
        "$0.80 \\pm 0.01^{\\dagger}$ {\\scriptsize $n{=}2$} {\\scriptsize ($-0.0123$)}")
    assert latex_cell(CellText(value="12,345", n=1, delta="+1"), 1) == "$12{,}345$ {\\scriptsize ($+1$)}"
    assert latex_cell(CellText(value="nan ± nan", n=2), 2) == "$\\text{nan} \\pm \\text{nan}$"
    assert latex_cell(CellText(empty="failed (3) [2]"), 3) == "failed (3) {[}2{]}"


def test_latex_with_tasks_as_columns_is_well_formed():
    report = build_report(make_rows(), ReportOptions(rows="strategy", cols="task", resamples=50))
    tex = body_of(LatexReporter().render(report))
    check_braces(tex)
    check_environments(tex)
    check_tabulars(tex)
    check_no_raw_specials(tex)
    assert "Bold: best of its column." in tex


ENGINES = [e for e in ("pdflatex", "lualatex", "tectonic") if shutil.which(e)]


@pytest.mark.skipif(not ENGINES, reason="no LaTeX engine (pdflatex, lualatex, tectonic) on PATH")
def test_latex_compiles(latex, tmp_path):
    engine = ENGINES[0]
    (tmp_path / "report.tex").write_text(standalone_document(latex), encoding="utf-8")
    command = [engine, "report.tex"] if engine == "tectonic" else [engine, "-interaction=nonstopmode",
                                                                   "-halt-on-error", "report.tex"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
    assert (tmp_path / "report.pdf").stat().st_size > 0


# -- HTML checks -----------------------------------------------------------------------------------------------

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class StrictTree(HTMLParser):
    """Checks that every element is closed in order (void elements never; ``<x/>`` only inside ``<svg>``); records
    ids, link targets, the tags seen and the text inside ``<pre>``."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.ids: list[str] = []
        self.links: list[str] = []
        self.tags: list[str] = []
        self.pre_text: list[str] = []
        self.decls: list[str] = []

    def _attrs(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name == "id":
                self.ids.append(value or "")
            if name in ("src", "href", "xlink:href", "action", "data", "poster"):
                self.links.append(value or "")

    def handle_starttag(self, tag, attrs):
        self._attrs(tag, attrs)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self._attrs(tag, attrs)
        if tag not in VOID and "svg" not in self.stack:
            self.errors.append(f"<{tag}/> outside svg")

    def handle_endtag(self, tag):
        if tag in VOID:
            self.errors.append(f"</{tag}>: void element closed")
        elif not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        if "pre" in self.stack:
            self.pre_text.append(data)

    def handle_decl(self, decl):
        self.decls.append(decl)

    def handle_pi(self, data):
        self.errors.append(f"processing instruction {data!r}")


def parse(page: str) -> StrictTree:
    tree = StrictTree()
    tree.feed(page)
    tree.close()
    assert tree.errors == []
    assert tree.stack == []
    return tree


def test_html_is_one_balanced_document(page):
    assert page.startswith("<!doctype html>\n")
    tree = parse(page)
    assert [d.lower() for d in tree.decls] == ["doctype html"]
    assert tree.tags[:3] == ["html", "head", "meta"] and 'charset="utf-8"' in page.split("\n", 5)[3]
    assert tree.tags.count("title") == 1 and tree.tags.count("style") >= 1
    assert len(tree.ids) == len(set(tree.ids)), "duplicate ids"
    missing = {link[1:] for link in tree.links if link.startswith("#")} - set(tree.ids)
    assert not missing, f"links to missing ids: {sorted(missing)[:5]}"


def test_html_loads_nothing_from_outside(page):
    tree = parse(page)
    assert all(link.startswith(("#", "data:")) for link in tree.links), [
        link for link in tree.links if not link.startswith(("#", "data:"))][:5]
    for tag in ("script", "link", "iframe", "object", "embed", "img"):
        assert tag not in tree.tags
    assert "@import" not in page and not re.search(r"url\((?!#)", page)


def test_html_tables_and_marks(page, report):
    tree = parse(page)
    assert page.count('<table class="quality">') == page.count('<table class="cost">') == len(report.tables) == 2
    assert tree.tags.count("thead") == tree.tags.count("tbody") == 5  # 2 quality, 2 cost, failures
    assert "<strong>0.8000 ± 0.0040</strong>" in page
    assert re.search(r'0\.7940 ± 0\.0057 <span class="nw" title="not significantly worse than the best of its row '
                     r'\(Holm-corrected p ≥ 0\.05\)">†</span>', page)
    assert '<small class="delta">Δ −0.3000</small>' in page
    assert '<small class="note">+1 failed <a href="#fn-1">[1]</a></small>' in page
    assert "<th scope=\"col\">few_shot@k=3</th>" in page and "ner_wnut (f1)" in page
    assert "2 planned cells have no record yet." in page
    assert "encoder_only: no generation {head} #2" in page


def test_html_escapes_texts(page):
    tree = parse(page)
    assert "<script" not in page.lower() and "<b>" not in page
    assert ERROR in tree.pre_text  # the full error, as recorded, in a <pre> (unescaped by the parser)
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "<dt>hostname</dt><dd>host_1 &amp; &lt;b&gt;</dd>" in page
    assert page.count("<pre>") == 4  # the failed seeds: ner_wnut lora seed 2, sst2 lora seeds 0-2


def test_html_inlines_every_plot_drawn(page, report, tmp_path):
    written = write_report_plots(report, tmp_path, formats=("svg",))
    assert written
    assert page.count("<svg") == len(written)
    assert "<?xml" not in page and "<!DOCTYPE svg" not in page and "<metadata" not in page
    plots = page.split('<section id="plots">')[1].split("</section>")[0]
    assert re.findall(r"<h3>([^<]*)</h3>", plots) == ["ner_wnut", "sst2"]
    assert "<figcaption>org/tiny_bert: quality vs trainable</figcaption>" in plots


def test_html_uses_the_reports_svg_plots(report, tmp_path, monkeypatch):
    import harness_plugins.report_html as report_html

    svgs = write_report_plots(report, tmp_path / "plots", formats=("svg",))[:2]
    png = tmp_path / "plots" / "extra.png"
    png.write_bytes(b"\x89PNG")
    given = build_report(make_rows(), OPTIONS, plots=[*svgs, png])

    def no_drawing(*args, **kwargs):
        raise AssertionError("plots drawn although the report has SVG plots")

    monkeypatch.setattr(report_html, "write_report_plots", no_drawing)
    page = HtmlReporter().render(given)
    tree = parse(page)
    assert page.count("<svg") == 2 and len(tree.ids) == len(set(tree.ids))
    assert "extra" not in page


def test_reporters_are_named_components():
    for reporter, name in ((LatexReporter(), "latex"), (HtmlReporter(), "html")):
        assert isinstance(reporter, Reporter) and reporter.name == name and reporter.description


def test_rendering_imports_no_torch(tmp_path):
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps(make_rows()), encoding="utf-8")
    code = (
        "import json, sys\n"
        "from harness_plugins.report_html import HtmlReporter\n"
        "from harness_plugins.report_latex import LatexReporter\n"
        "from harness.report.reporting import ReportOptions, build_report\n"
        f"report = build_report(json.loads(open({str(rows)!r}).read()), ReportOptions(resamples=50))\n"
        "assert LatexReporter().render(report) and '<svg' in HtmlReporter().render(report)\n"
        "print(','.join(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == ""
