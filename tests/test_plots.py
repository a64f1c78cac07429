"""harness.report.plots: the Pareto front on hand-made points, and the files write_plots writes (without torch)."""

from __future__ import annotations

import math
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from harness.report.plots import Point, pareto_front, plot_stem, write_plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def pt(strategy: str, quality: float, cost: float | None, *, task: str = "sst2", model: str = "tiny", **kw) -> Point:
    """A point whose trainable parameters are ``cost`` (the cost the Pareto tests use)."""
    fields = {"metric": "accuracy", "quality_std": None, "peak_mib": None, "memory_kind": None, "train_s": None}
    return Point(task=task, model=model, strategy=strategy, quality=quality, trainable=cost, **{**fields, **kw})


def names(points: list[Point]) -> list[str]:
    return [p.strategy for p in points]


def trainable(p: Point) -> float | None:
    return p.trainable


# -- pareto_front ----------------------------------------------------------------------------------------------


def test_pareto_front_keeps_undominated_points_sorted_by_cost():
    points = [
        pt("full", 0.90, 1e8),
        pt("lora", 0.88, 1e5),
        pt("ia3", 0.80, 1e4),
        pt("prefix", 0.70, 5e5),  # beaten by lora: cheaper and better
        pt("bitfit", 0.80, 2e4),  # same quality as ia3 at a higher cost
        pt("zero_shot", 0.50, 0),
        pt("no_cost", 0.99, None),  # left out, however good
    ]
    assert names(pareto_front(points, trainable)) == ["zero_shot", "ia3", "lora", "full"]


def test_pareto_front_ties():
    points = [pt("a", 0.8, 10), pt("b", 0.8, 10), pt("c", 0.7, 10), pt("d", 0.9, 20)]
    # identical points do not dominate each other; at equal cost the better quality wins
    assert names(pareto_front(points, trainable)) == ["a", "b", "d"]


def test_pareto_front_lower_is_better():
    points = [pt(s, q, c, higher_is_better=False) for s, q, c in [("a", 5.0, 1), ("b", 3.0, 2), ("c", 4.0, 3)]]
    assert names(pareto_front(points, trainable)) == ["a", "b"]


def test_pareto_front_edge_cases():
    assert pareto_front([], trainable) == []
    assert pareto_front([pt("a", 0.5, None), pt("b", 0.6, math.nan)], trainable) == []
    assert names(pareto_front([pt("a", math.nan, 1), pt("b", 0.1, 5)], trainable)) == ["b"]
    with pytest.raises(ValueError, match="higher_is_better"):
        pareto_front([pt("a", 0.5, 1), pt("b", 0.6, 2, higher_is_better=False)], trainable)


# -- write_plots -----------------------------------------------------------------------------------------------


def synthetic() -> tuple[list[Point], dict[tuple[str, str, str], list[float]]]:
    """Six points of task sst2 (with a k-shot curve), two of en-de on a model with a slash, and step times."""
    common = {"task": "sst2", "model": "tiny", "memory_kind": "GPU"}
    sst2 = [
        pt("full", 0.90, 4.4e6, quality_std=0.01, peak_mib=900, train_s=120, **common),
        pt("lora", 0.87, 1.2e5, quality_std=0.02, peak_mib=400, train_s=60, **common),
        pt("zero_shot", 0.55, 0, peak_mib=200, train_s=0, **common),
        pt("few_shot@k=1", 0.60, 0, quality_std=0.03, peak_mib=210, train_s=None, **common),
        pt("few_shot@k=3", 0.65, 0, quality_std=0.02, peak_mib=230, train_s=None, **common),
        pt("few_shot@k=8", 0.70, 0, quality_std=0.01, peak_mib=260, train_s=None, **common),
    ]
    common = {"task": "en-de", "model": "org/mini", "metric": "bleu"}
    ende = [
        pt("lora", 21.0, 3e5, peak_mib=800, memory_kind="GPU", train_s=30, **common),
        pt("full", 25.0, 3e7, peak_mib=3000, memory_kind="RSS", **common),
    ]
    steps = {("sst2", "tiny", "full"): [0.20, 0.21, 0.22, 0.5], ("sst2", "tiny", "lora"): [0.1, 0.11, 0.12]}
    return sst2 + ende, steps


def check_files(paths):
    for path in paths:
        data = path.read_bytes()
        assert data, path
        if path.suffix == ".png":
            assert data.startswith(PNG_SIGNATURE), path
        else:
            assert ET.fromstring(data).tag.endswith("svg"), path


def test_write_plots_writes_every_plot_in_both_formats(tmp_path):
    points, steps = synthetic()
    out = tmp_path / "plots"
    written = write_plots(points, out, step_times=steps)
    assert written == sorted(written) and all(p.parent == out for p in written)
    sst2 = ["quality-vs-trainable", "quality-vs-memory", "quality-vs-train-time", "quality-vs-k", "step-times"]
    # en-de: no k-shot variants, no step times; its full point has no train time and trains something: left out
    ende = ["quality-vs-trainable", "quality-vs-memory", "quality-vs-train-time"]
    expected = {f"{plot_stem('sst2', 'tiny', plot)}.{fmt}" for plot in sst2 for fmt in ("png", "svg")}
    expected |= {f"{plot_stem('en-de', 'org/mini', plot)}.{fmt}" for plot in ende for fmt in ("png", "svg")}
    assert {p.name for p in written} == expected
    assert "sst2--tiny--quality-vs-trainable.png" in expected and "en-de--org_mini--step-times.svg" not in expected
    assert sorted(out.iterdir()) == written
    check_files(written)


def test_zero_cost_points_stay_on_a_symlog_axis_with_the_front_drawn():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from harness.report.plots import _cost_figure

    points, _ = synthetic()
    sst2 = [p for p in points if p.task == "sst2"]
    fig = _cost_figure(plt, "sst2", "tiny", sst2, "quality-vs-trainable")
    try:
        ax = fig.axes[0]
        assert ax.get_xscale() == "symlog" and "0 = nothing trained" in ax.get_xlabel()
        assert {t.get_text() for t in ax.texts} == {p.strategy for p in sst2}
        (front,) = [line for line in ax.get_lines() if line.get_label() == "Pareto front"]
        assert list(front.get_xdata()) == [0, 1.2e5, 4.4e6] and list(front.get_ydata()) == [0.70, 0.87, 0.90]
        assert "sst2" in ax.get_title() and "tiny" in ax.get_title() and "accuracy" in ax.get_title()
    finally:
        plt.close(fig)


def test_write_plots_skips_what_has_no_points(tmp_path):
    points, _ = synthetic()
    nothing = [pt("full", math.nan, 1e6, task="empty", model="tiny", peak_mib=1, train_s=1)]
    no_costs = [pt("lora", 0.5, None, task="bare", model="tiny")]  # no cost of any kind: nothing to plot
    steps = {("empty", "tiny", "full"): [], ("sst2", "tiny", "lora"): [math.nan]}
    written = write_plots(points[:1] + nothing + no_costs, tmp_path, step_times=steps, formats=("png",))
    assert [p.name for p in written] == [
        "sst2--tiny--quality-vs-memory.png",
        "sst2--tiny--quality-vs-train-time.png",
        "sst2--tiny--quality-vs-trainable.png",
    ]
    assert write_plots([], tmp_path / "none") == [] and not (tmp_path / "none").exists()


def test_colliding_slugs_get_distinct_names(tmp_path):
    points = [pt("full", 0.5, 10, model="a/b"), pt("full", 0.6, 10, model="a_b")]
    written = write_plots(points, tmp_path, formats=("svg",))
    assert len(written) == 2 and len({p.name for p in written}) == 2


def test_plots_module_is_light_and_never_imports_torch(tmp_path):
    code = (
        "import sys, harness.report.plots as hp\n"
        "heavy = [m for m in ('matplotlib', 'numpy', 'torch', 'transformers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "p = hp.Point('t', 'm', 's', 'acc', 0.5, None, 10, 100, 'RSS', 1.0)\n"
        f"assert hp.write_plots([p], __import__('pathlib').Path({str(tmp_path)!r}), formats=('png',))\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
