"""Bad data files and awkward names, found by testing as a new user would (issue 12, items 1-6, 8, 9).

Each input is built here, offline. Through `harness validate` each must give `error:` lines naming file and place
and exit 2 (or warnings and exit 0), never a traceback and never a hang; through the cells' loaders the same
HarnessError.
"""

from __future__ import annotations

import codecs
import json
import os
import subprocess
import sys
from pathlib import Path

import helpers
import pytest
from harness_plugins.classification import ClassificationTask
from harness_plugins.classification.data import load_splits
from harness_plugins.ner import NerTask
from harness_plugins.summarization import SummarizationTask
from harness_plugins.translation import TranslationTask
from test_cli import assert_usage_error

from harness.api.budget import Budget
from harness.api.cells import MAX_ID_IN_DIRNAME
from harness.api.components import CheckContext
from harness.api.options import check_options
from harness.errors import HarnessError
from harness.planning.plan import plan
from harness.planning.suite import MAX_NAME, load_suite
from harness.tasklib.datacheck import DATA_WARNINGS
from harness.tasklib.datafiles import MAX_LINE_BYTES, head_text, read_text

ROOT = Path(__file__).resolve().parents[1]
TASKS = {"classification": ClassificationTask(), "ner": NerTask(), "translation": TranslationTask(),
         "summarization": SummarizationTask()}  # fmt: skip
CLASSES = "text,label\n" + "".join(f"text {i},{'pos' if i % 2 else 'neg'}\n" for i in range(40))
CONLL = "".join(f"Anna{i} B-PER\nlives O\nin O\nParis B-LOC\n\n" for i in range(20))
PAIRS_JSONL = "".join(json.dumps({"translation": {"en": f"house {i}", "de": f"Haus {i}"}}) + "\n" for i in range(20))
DOCS_JSONL = "".join(json.dumps({"document": f"a long text {i}", "summary": f"text {i}"}) + "\n" for i in range(20))


def check(task: str, base_dir: Path, **given) -> list[str]:
    plugin = TASKS[task]
    defaults = {"translation": {"source_lang": "en", "target_lang": "de"}}.get(task, {})
    resolved, problems = check_options(plugin.options, {**defaults, **given}, "tasks.t", base_dir)
    assert not problems, problems
    ctx = CheckContext(base_dir, offline=True)
    return [str(p) for p in plugin.check(resolved, "tasks.t", ctx)] + [f"warning {w}" for w in ctx.warnings]


def harness(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)  # fmt: skip


def suite(tmp_path: Path, task: str, **options) -> Path:
    lines = [f"{key} = {json.dumps(value)}" for key, value in options.items()]
    text = "[models.m]\nsource = \"tiny\"\n[tasks.t]\n" + f'type = "{task}"\n' + "\n".join(lines) + "\n[strategies.full]\n"
    path = tmp_path / "suite.toml"
    path.write_text(text)
    return path


# -- 1, 2: a directory, a FIFO or a device as a data file -----------------------------------------------------------
NOT_FILES = [
    ("classification", {"format": "csv"}, "train"),
    ("classification", {"format": "tsv"}, "train"),
    ("classification", {"format": "jsonl"}, "train"),
    ("classification", {"format": "text-files", "train_labels": "labels.txt"}, "train"),
    ("classification", {"format": "text-files", "train": "texts.txt"}, "train_labels"),
    ("classification", {"format": "csv", "train": "ok.csv"}, "label_map"),
    ("ner", {"format": "conll"}, "train"),
    ("ner", {"format": "spans"}, "train"),
    ("translation", {"format": "parallel", "train_target": "de.txt"}, "train"),
    ("translation", {"format": "parallel", "train": "en.txt"}, "train_target"),
    ("translation", {"format": "po"}, "train"),
    ("translation", {"format": "jsonl"}, "train"),
    ("translation", {"format": "csv"}, "train"),
    ("summarization", {"format": "tsv"}, "train"),
]


@pytest.mark.parametrize("kind", ["directory", "fifo", "device"])
@pytest.mark.parametrize(("task", "given", "key"), NOT_FILES)
def test_a_data_file_that_is_not_a_regular_file_is_one_problem(tmp_path, task, given, key, kind):
    (tmp_path / "labels.txt").write_text("pos\n" * 10)
    (tmp_path / "texts.txt").write_text("a text\n" * 10)
    (tmp_path / "en.txt").write_text("house\n" * 10)
    (tmp_path / "de.txt").write_text("Haus\n" * 10)
    (tmp_path / "ok.csv").write_text(CLASSES)
    if kind == "directory":
        (tmp_path / "odd").mkdir()
        odd, says = str(tmp_path / "odd"), "is a directory; expected a data file"
    elif kind == "fifo":
        os.mkfifo(tmp_path / "odd")
        odd, says = str(tmp_path / "odd"), "is a FIFO, not a regular file"
    else:
        odd, says = "/dev/zero", "is a character device, not a regular file"
    found = check(task, tmp_path, **{**given, key: odd})  # a FIFO would block here if it were opened
    assert found and all(says in problem for problem in found), found
    assert all(problem.startswith("tasks.t") and odd in problem for problem in found), found


def test_not_regular_files_through_the_cli_and_the_cells_loader(tmp_path):
    (tmp_path / "data.csv").mkdir()
    os.mkfifo(tmp_path / "pipe.csv")
    for name in ("data.csv", "pipe.csv", "/dev/zero"):
        result = harness("validate", str(suite(tmp_path, "classification", train=name, format="csv")), cwd=tmp_path)
        [line] = assert_usage_error(result, "suite.toml:5: tasks.t.train:", "not a regular file" if name != "data.csv"
                                    else "is a directory")  # fmt: skip
    with pytest.raises(HarnessError, match="is a directory; expected a data file"):
        load_splits({**resolved_classification(tmp_path, "x.csv"), "train": str(tmp_path / "data.csv")})


def resolved_classification(base_dir: Path, train: str, **given) -> dict:
    (base_dir / train).write_text(CLASSES) if not (base_dir / train).exists() else None
    resolved, problems = check_options(TASKS["classification"].options, {"train": train, **given}, "t", base_dir)
    assert not problems
    return resolved


def test_a_line_without_end_is_refused_not_read_whole(tmp_path, monkeypatch):
    import harness.tasklib.datafiles as datafiles

    path = tmp_path / "one-line.csv"
    path.write_bytes(b"text,label" + b"x" * 300_000)
    with pytest.raises(HarnessError, match=r"one-line\.csv:1: no line end in its first 64 KiB"):
        head_text(path, "utf-8")
    monkeypatch.setattr(datafiles, "MAX_LINE_BYTES", 1000)
    path.write_bytes(b"text,label\n" + b"a,b\n" * 10 + b"y" * 5000 + b"\n")
    with pytest.raises(HarnessError, match=r"one-line\.csv:12: line longer than"):
        read_text(path, "utf-8")
    assert MAX_LINE_BYTES >= 1024 * 1024  # real lines (a DialogSum dialogue) are far below the real limit


# -- 3, 4: names -------------------------------------------------------------------------------------------------
def test_long_declared_names_are_refused_and_cell_folders_stay_short(tmp_path):
    (tmp_path / "train.csv").write_text(CLASSES)
    long = "t" * 300
    path = tmp_path / "suite.toml"
    path.write_text(f'[models.m]\nsource = "tiny"\n[tasks.{long}]\ntype = "classification"\ntrain = "train.csv"\n'
                    "[strategies.full]\n")  # fmt: skip
    result = harness("validate", str(path), cwd=tmp_path)
    [line] = assert_usage_error(result, f"tasks.{long}: the name is 300 characters long; at most {MAX_NAME}")
    assert line.startswith("error: ") and f"{path}:3:" in line
    ok = "n" * MAX_NAME
    path.write_text(f'[suite]\nname = "{ok}"\n[models.{ok}]\nsource = "tiny"\n[tasks.{ok}]\ntype = "classification"\n'
                    f'train = "train.csv"\n[strategies.{ok}]\ntype = "full"\n')  # fmt: skip
    cells = plan(load_suite(path, toy_host_with_builtins()), toy_host_with_builtins())
    for cell in cells:
        assert len(cell.dirname) <= MAX_ID_IN_DIRNAME + 10 < 255
        (tmp_path / "results" / ok / "cells" / cell.dirname).mkdir(parents=True)  # the filesystem takes it
    longer = helpers.make_cell(task="x" * 200, strategy="y" * 200, model="z" * 200)
    assert len(longer.dirname) <= MAX_ID_IN_DIRNAME + 10
    assert longer.dirname != helpers.make_cell(task="x" * 200, strategy="y" * 200, model="z" * 199).dirname


def toy_host_with_builtins():
    from harness.api.host import PluginHost

    return PluginHost.load()


@pytest.mark.parametrize("name", ["../../x", "/tmp/abs", "a/b", "..", ".hidden", "a\\b", "tab\there"])
def test_the_suite_name_is_a_name_not_a_path(tmp_path, name):
    (tmp_path / "train.csv").write_text(CLASSES)
    path = tmp_path / "suite.toml"
    path.write_text(f'[suite]\nname = {json.dumps(name)}\n[models.m]\nsource = "tiny"\n[tasks.t]\n'
                    'type = "classification"\ntrain = "train.csv"\n[strategies.full]\n')  # fmt: skip
    for command in (["validate", str(path)], ["run", str(path), "--dry-run"]):
        result = harness(*command, cwd=tmp_path)
        [line] = assert_usage_error(result, f"{path}:2: suite.name:")
        assert "plain name" in line
    assert not (tmp_path.parent.parent / "x").exists()


# -- 5: errors the whole read finds, at validate time --------------------------------------------------------------
BAD_DEEP_DOWN = [
    ("classification", {"train": "d.jsonl"}, "d.jsonl",
     '{"text": "a", "label": "x"}\n' * 5 + '{"text": "b", "lab\n' + '{"text": "c", "label": "y"}\n' * 5,
     r"d\.jsonl:6: not valid JSON \(Unterminated string starting at column 15\)"),
    ("classification", {"train": "d.csv"}, "d.csv", CLASSES * 200 + "caf\xe9,pos\n",  # past the 64 KiB checked first
     r"d\.csv:8201: cannot decode byte 0xe9"),
    ("ner", {"train": "d.conll"}, "d.conll", CONLL * 200 + "Bad X-TAG\n", r"d\.conll:20001: 'X-TAG' is not a tag"),
    ("translation", {"train": "d.jsonl"}, "d.jsonl", PAIRS_JSONL + '{"translation": {"en": "x"}}\n',
     r"d\.jsonl:21: no target"),
    ("summarization", {"train": "d.jsonl"}, "d.jsonl", DOCS_JSONL + "[1, 2]\n",
     r"d\.jsonl:21: expected a JSON object"),
]


@pytest.mark.parametrize(("task", "given", "name", "text", "message"), BAD_DEEP_DOWN)
def test_validation_reads_every_line_as_the_cells_do(tmp_path, task, given, name, text, message):
    (tmp_path / name).write_bytes(text.encode("latin-1") if "\xe9" in text else text.encode())
    found = check(task, tmp_path, **given)
    assert len(found) == 1 and found[0].startswith("tasks.t: "), found
    assert __import__("re").search(message, found[0]), found


def test_a_bad_line_through_harness_validate_and_the_cache(tmp_path):
    good = '{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n' * 10
    data = tmp_path / "d.jsonl"
    data.write_text(good + '{"text": "c", "label\n')
    path = suite(tmp_path, "classification", train="d.jsonl")
    result = harness("validate", str(path), cwd=tmp_path)
    [line] = assert_usage_error(result, f"{path}:3: tasks.t: {data}:21: not valid JSON (Unterminated string "
                                        "starting at column 15)")  # fmt: skip
    data.write_text(good)  # fixed: read again (another size and mtime), then remembered
    assert harness("validate", str(path), cwd=tmp_path).returncode == 0
    assert harness("validate", str(path), cwd=tmp_path).returncode == 0
    stat = data.stat()
    data.write_text(good[:-2] + "\n\n")  # broken again: another identity, read again
    data.write_text(good.replace('"y"}\n', '"y"\n', 1))
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert harness("validate", str(path), cwd=tmp_path).returncode == 2


# -- 6: declared encodings with byte-order marks -------------------------------------------------------------------
@pytest.mark.parametrize(("encoding", "bom"), [("utf-16", b""), ("utf-16-le", codecs.BOM_UTF16_LE),
                                               ("utf-16-be", codecs.BOM_UTF16_BE), ("utf-8-sig", b""),
                                               ("utf-8", codecs.BOM_UTF8)])  # fmt: skip
def test_declared_encodings_read_files_with_a_bom(tmp_path, encoding, bom):
    text = CLASSES.replace("text 3,", "t\u00e9xt 3 \u0100\u010a,")  # U+010A is 0x0a 0x01 in UTF-16 LE
    (tmp_path / "d.csv").write_bytes(bom + text.encode(encoding))
    assert check("classification", tmp_path, train="d.csv", encoding=encoding) == []
    splits = load_splits(resolved_classification(tmp_path, "d.csv", encoding=encoding))
    assert {e.text for split in ("train", "validation", "test") for e in splits[split]} >= {"t\u00e9xt 3 \u0100\u010a"}
    (tmp_path / "l.txt").write_bytes(bom + "".join("pos\n" if i % 2 else "neg\n" for i in range(40)).encode(encoding))
    (tmp_path / "t.txt").write_bytes(bom + "".join(f"a \u010a {i}\n" for i in range(40)).encode(encoding))
    assert check("classification", tmp_path, train="t.txt", train_labels="l.txt", encoding=encoding) == []


def test_a_bom_the_declared_encoding_cannot_read_is_named_in_the_hint(tmp_path):
    (tmp_path / "d.csv").write_bytes(CLASSES.encode("utf-16"))
    [problem] = check("classification", tmp_path, train="d.csv")
    assert 'starts with a UTF-16 LE byte-order mark: set encoding = "utf-16"' in problem and "latin-1" not in problem
    (tmp_path / "d.csv").write_bytes(CLASSES.encode("latin-1") + "caf\xe9,pos\n".encode("latin-1"))
    [problem] = check("classification", tmp_path, train="d.csv")
    assert 'e.g. "latin-1"' in problem


# -- 8: one class, labels test has and train has not ----------------------------------------------------------------
def test_one_class_and_unseen_labels_warn_at_validate_and_in_the_record(tmp_path):
    (tmp_path / "one.csv").write_text("text,label\n" + "".join(f"t {i},pos\n" for i in range(30)))
    found = check("classification", tmp_path, train="one.csv")
    assert found == ["warning tasks.t: every example of train (24), validation (3), test (3) has the label 'pos': "
                     "accuracy is trivial there; check label_column"]  # fmt: skip
    result = harness("validate", str(suite(tmp_path, "classification", train="one.csv")), cwd=tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr
    assert "warning: " in result.stderr and "suite.toml:3: tasks.t: every example of train" in result.stderr
    (tmp_path / "train.csv").write_text(CLASSES)
    (tmp_path / "test.csv").write_text("text,label\n" + "a,pos\nb,neg\nc,neu\n")
    found = check("classification", tmp_path, train="train.csv", test="test.csv", labels=["neg", "pos", "neu"])
    assert found == ["warning tasks.t: test has labels that train never shows: neu"]
    options = resolved_classification(tmp_path, "train.csv", test="test.csv", labels=["neg", "pos", "neu"])
    run = TASKS["classification"].setup(options, helpers.cell_context(tmp_path, budget=Budget()))
    assert run.metadata[DATA_WARNINGS] == "test has labels that train never shows: neu"
    assert "metric_library" in run.metadata  # the task's own facts are kept


def test_ner_without_entities_or_with_unseen_types_warns(tmp_path):
    (tmp_path / "train.conll").write_text("".join(f"w{i} O\nx O\n\n" for i in range(20)))
    [warning] = check("ner", tmp_path, train="train.conll", entity_types=["PER"])
    assert "no sentence of train, validation, test has an entity: every tag is O" in warning
    (tmp_path / "train.conll").write_text(CONLL)
    (tmp_path / "test.conll").write_text("Bob B-PER\nat O\nACME B-ORG\n\n")
    [warning] = check("ner", tmp_path, train="train.conll", test="test.conll", entity_types=["PER", "LOC", "ORG"])
    assert warning == "warning tasks.t: test has entity types that train never shows: ORG"


# -- 9: wording ---------------------------------------------------------------------------------------------------
def test_wording_of_json_errors_top_level_keys_bom_and_empty_files(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "a, "label": "x"}\n')
    [problem] = check("classification", tmp_path, train="d.jsonl")
    assert "at at" not in problem and "not valid JSON (Expecting ',' delimiter at column" in problem
    (tmp_path / "d.jsonl").write_text('{"text": "a\n')
    [problem] = check("classification", tmp_path, train="d.jsonl")
    assert "(Unterminated string starting at column 10)" in problem
    (tmp_path / "train.csv").write_text(CLASSES)
    path = tmp_path / "suite.toml"
    body = '[models.m]\nsource = "tiny"\n[tasks.t]\ntype = "classification"\ntrain = "train.csv"\n[strategies.full]\n'
    path.write_text('name = "x"\n' + body)
    [line] = assert_usage_error(harness("validate", str(path), cwd=tmp_path), f"{path}:1: name: unknown top-level key")
    assert "belongs in [suite]" in line and "unknown table" not in line
    path.write_bytes(codecs.BOM_UTF8 + body.encode())
    [line] = assert_usage_error(harness("validate", str(path), cwd=tmp_path), "byte-order mark (BOM)")
    assert "Invalid statement" not in line
    for name, text in (("e.csv", ""), ("e.jsonl", "\n\n"), ("e.tsv", "  \n")):
        (tmp_path / name).write_text(text)
        [problem] = check("classification", tmp_path, train=name)
        assert problem.endswith(f"{tmp_path / name}: empty file"), problem
    (tmp_path / "e.conll").write_text("")
    [problem] = check("ner", tmp_path, train="e.conll")
    assert problem.endswith("e.conll: empty file"), problem


def test_shipped_suites_still_validate_without_warnings():
    for name in ("smoke", "nlp"):
        result = harness("validate", str(ROOT / "suites" / f"{name}.toml"), cwd=ROOT)
        if "not installed" in result.stderr:
            pytest.skip(result.stderr.strip())
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        assert not [line for line in result.stderr.splitlines() if "tasks." in line], result.stderr


