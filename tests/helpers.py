"""Small builders shared by tests (``tests/`` is on ``sys.path``, see conftest)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.api.budget import Budget
from harness.api.cells import Cell
from harness.api.components import CellContext


def make_cell(**changes: Any) -> Cell:
    """A classification × full × tiny cell; any field can be changed."""
    fields: dict[str, Any] = dict(
        suite="s", task="t", task_type="classification", task_options={}, strategy="full", strategy_type="full",
        strategy_options={}, model="m", model_source="tiny", model_options={}, model_family="encoder", seed=0,
        budget=Budget(),
    )
    fields.update(changes)
    return Cell(**fields)


def cell_context(out_dir: Path, device: str = "cpu", **changes: Any) -> CellContext:
    """A :class:`CellContext` for calling a component's heavy methods directly."""
    return CellContext(cell=make_cell(**changes), device=device, out_dir=out_dir)


def gone(pid: int) -> bool:
    """The process no longer runs (absent, or a zombie nobody reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")
