"""Records and the results directory: schema round trip, atomic writes, per-cell locks, resume keys."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from helpers import make_cell

from harness.api.budget import Budget
from harness.api.cells import Cell
from harness.results.records import (
    SCHEMA_VERSION,
    Evaluation,
    Memory,
    Params,
    Record,
    Timing,
    Training,
    write_json_atomic,
)
from harness.results.store import ResultStore


def cell(**changes) -> Cell:
    return make_cell(**{"task_options": {"train": "x.csv"}, "model_options": {"layers": 2}, **changes})


def record_for(c: Cell, status="ok", **changes) -> Record:
    values = dict(
        key=c.key, suite=c.suite, cell_id=c.cell_id, task=c.task, strategy=c.strategy, model=c.model, seed=c.seed,
        status=status, metrics={"accuracy": 0.5}, primary_metric="accuracy",
        params=Params(total=10, trainable=5, trainable_pct=50.0, head=2, stored_bytes=20, artifact_bytes=900),
        timing=Timing(load_s=1.0, train_s=2.0), memory=Memory(peak_rss_bytes=123), training=Training(validation=(0.1, 0.2)),
        evaluation=Evaluation(samples=4, tokens=40, tokens_per_sample=10.0, shots=2.5),
        config=c.config(),
    )
    values.update(changes)
    return Record(**values)


def test_record_round_trips_and_carries_schema_version():
    c = cell()
    record = record_for(c)
    data = json.loads(json.dumps(record.to_json()))
    assert data["schema_version"] == SCHEMA_VERSION
    assert Record.from_json(data) == record
    with pytest.raises(ValueError, match="status must be one of"):
        record_for(c, status="weird")
    with pytest.raises(ValueError, match="newer than this harness"):
        Record.from_json({**data, "schema_version": SCHEMA_VERSION + 1})


def test_key_depends_on_every_option_but_not_on_skip_reason():
    base = cell()
    assert cell(seed=1).key != base.key
    assert cell(budget=Budget(learning_rate=1e-3)).key != base.key
    assert cell(model_options={"layers": 3}).key != base.key
    assert cell(skip_reason="nope").key == base.key


def test_atomic_write_never_leaves_half_a_file(tmp_path, monkeypatch):
    path = tmp_path / "record.json"
    write_json_atomic(path, {"old": True})

    def broken_dump(obj, fh, **kwargs):
        fh.write('{"new": ')
        raise OSError("disk full")

    monkeypatch.setattr(json, "dump", broken_dump)
    with pytest.raises(OSError):
        write_json_atomic(path, {"new": True})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]  # no temporary left behind


def test_store_done_means_ok_with_matching_key(tmp_path):
    store = ResultStore(tmp_path)
    c = cell()
    assert store.load(c) is None and not store.is_done(c)
    store.write(c, record_for(c, status="failed", error="boom"))
    assert store.load(c).status == "failed" and not store.is_done(c)  # failed cells are retried
    store.write(c, record_for(c))
    assert store.is_done(c)
    (store.record_path(c)).write_text("{ truncated")
    assert store.load(c) is None  # an unreadable record is not 'done'


def test_lock_is_exclusive_across_processes(tmp_path):
    store = ResultStore(tmp_path)
    c = cell()
    with store.lock(c) as held:
        assert held
        probe = textwrap.dedent(f"""
            import sys
            sys.path.insert(0, {str(tmp_path)!r})
            from harness.results.store import ResultStore
            from harness.api.cells import Cell
            import json
            c = Cell.from_json(json.loads({json.dumps(json.dumps(c.to_json()))}))
            with ResultStore({str(tmp_path)!r}).lock(c) as held:
                print(held)
        """)
        other = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
        assert other.stdout.strip() == "False", other.stderr
    with store.lock(c) as held_again:
        assert held_again


def test_unwritable_output_is_one_line(tmp_path):
    from harness.errors import HarnessError

    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(HarnessError, match="output directory is not writable") as info:
        ResultStore(blocker / "sub").ensure_writable()
    assert "\n" not in str(info.value)


def test_a_record_of_a_newer_harness_is_never_taken_for_missing(tmp_path):
    from harness.errors import HarnessError
    from harness.report.rows import load_rows

    store = ResultStore(tmp_path)
    c = cell()
    newer = {**record_for(c).to_json(), "schema_version": SCHEMA_VERSION + 1}
    write_json_atomic(store.record_path(c), newer)
    with pytest.raises(HarnessError, match="record schema .* is newer than this harness reads .* upgrade harness"):
        store.is_done(c)  # a run would otherwise rerun the cell and overwrite the newer record
    with pytest.raises(HarnessError, match=r"record.json: record schema"):
        load_rows(tmp_path)
