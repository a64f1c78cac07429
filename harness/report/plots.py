"""Comparison plots for ``harness report RESULTS --plots DIR``: quality against what a strategy costs.

The caller summarises each (task, model, strategy) over its ``ok`` seeds into a :class:`Point` (mean quality, its
sample standard deviation, trainable parameters, peak memory in MiB, training seconds) and passes the points, and
optionally the per-step training times, to :func:`write_plots`. One set of figures is drawn per **(task, model)**
(a task run on several models gets one set per model, never mixed in one axes: costs and qualities of different
models are not comparable points of one front). Every figure is written in each of ``formats`` (PNG and SVG by
default) as ``{task}--{model}--{plot}.{format}``, task and model made file-name safe (see :func:`plot_stem`):

``quality-vs-trainable``
    Quality (y, the task's primary metric, ± one sample std as error bars) against trainable parameters (x, log
    scale). Strategies that train nothing (zero-/few-shot, 0 trainable parameters) stay on the plot: the axis is
    then symlog (linear between 0 and the smallest non-zero count, logarithmic above), which the label says.
``quality-vs-memory``
    Quality against peak memory in MiB (2**20 bytes). The label says which memory: ``GPU`` (torch's peak allocated
    memory) or ``RSS`` (peak resident set size of the cell process, cells that ran without a GPU); when a figure
    mixes both, the marker shape says which point is which (circle GPU, square RSS) and the label says "mixed".
``quality-vs-train-time``
    Quality against training seconds. A point without a train time but with 0 trainable parameters does not
    train and is drawn at 0 s; a point without a train time otherwise is left out. Zeros make the axis symlog.
``quality-vs-k``
    k-shot learning curves, drawn when the points hold at least two variants ``base@k=N`` of one base strategy
    (``few_shot@k=1``, ``few_shot@k=3``, ...): quality (± std) against k, one line per base strategy.
``step-times``
    Box plots of seconds per training step, one box per strategy (median, quartiles, whiskers at 1.5 IQR,
    outliers as dots), from ``step_times[(task, model, strategy)]`` (warm-up steps already excluded by the caller).

The memory and train-time axes turn logarithmic (symlog with zeros) when their non-zero values span more than
:data:`LOG_SPAN` times. Each point of the three cost plots is labelled with its strategy name.

**Pareto front.** For a cost (trainable parameters, peak memory or train time) a point *dominates* another when
its cost is lower or equal and its quality better or equal (higher, or lower for ``higher_is_better=False``
metrics), and it is strictly better in at least one of the two. The front is the set of points no other point
dominates: the strategies worth their cost. Identical points do not dominate each other and are both on the
front. Points without a cost, or with a non-finite quality, take no part. The front is drawn as a dashed step
line through its points in order of cost: at each cost, the best quality reachable for at most that cost.

A plot with no points is not written. Importing this module is light: matplotlib is imported (with the
non-interactive Agg backend) only by :func:`write_plots`; torch is never imported.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Figure size in inches (matplotlib's default).
FIGSIZE = (6.4, 4.8)
#: A memory or train-time axis is logarithmic when its largest non-zero value is this many times its smallest.
LOG_SPAN = 50.0
#: Strategy names of k-shot variants: the base strategy, ``@k=`` and the number of shots.
K_VARIANT = re.compile(r"^(?P<base>.+)@k=(?P<k>\d+)$")

Key = tuple[str, str, str]


@dataclass(frozen=True)
class Point:
    """One (task, model, strategy) summarised over its ok seeds."""

    task: str
    model: str
    strategy: str
    #: The quality metric's name, e.g. ``"accuracy"``, ``"bleu"``.
    metric: str
    #: Mean of the metric over the ok seeds.
    quality: float
    #: Sample standard deviation over the ok seeds (``None`` or 0 for one seed): the error bars.
    quality_std: float | None
    #: Trainable parameters (0 for zero-/few-shot).
    trainable: float | None
    #: Peak memory in MiB, of the kind ``memory_kind``: ``"GPU"`` (torch peak allocated) or ``"RSS"`` (process peak).
    peak_mib: float | None
    memory_kind: str | None
    #: Training seconds (0 or ``None`` for strategies that do not train).
    train_s: float | None
    higher_is_better: bool = True


def _finite(value: float | None) -> float | None:
    """``value`` as a float, or ``None`` when it is missing or not finite."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def pareto_front(points: Sequence[Point], cost: Callable[[Point], float | None]) -> list[Point]:
    """The points no other point beats on both axes: lower-or-equal cost and better-or-equal quality, strictly better
    in one. Points without a cost are left out. Sorted by cost.

    "Better" quality is higher, or lower when the points' ``higher_is_better`` is false. Points with a missing or
    non-finite cost or quality take no part. Ties: identical points are all on the front; at equal cost the best
    quality wins, at equal quality the lowest cost. Points of equal cost are ordered best quality first, then by
    strategy name.

    :raises ValueError: the points disagree on ``higher_is_better``.
    """
    scored = [(c, p) for p in points if (c := _finite(cost(p))) is not None and _finite(p.quality) is not None]
    if len({p.higher_is_better for _, p in scored}) > 1:
        raise ValueError("pareto_front: points disagree on higher_is_better")
    sign = 1.0 if not scored or scored[0][1].higher_is_better else -1.0
    keyed = [(c, sign * p.quality, p) for c, p in scored]

    def dominated(c: float, q: float) -> bool:
        return any(oc <= c and oq >= q and (oc < c or oq > q) for oc, oq, _ in keyed)

    front = [(c, q, p) for c, q, p in keyed if not dominated(c, q)]
    front.sort(key=lambda t: (t[0], -t[1], t[2].strategy))
    return [p for _, _, p in front]


# -- file names ------------------------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", text).lstrip(".") or "_"


def plot_stem(task: str, model: str, plot: str) -> str:
    """The file name (without format suffix) of one plot: ``{task}--{model}--{plot}``, characters other than
    letters, digits and ``._=+-`` replaced by ``_`` (``org/model`` -> ``org_model``)."""
    return f"{_slug(task)}--{_slug(model)}--{plot}"


def _stems(pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """(task, model) -> the file-name prefix; pairs whose slugs collide get a short hash of their real names."""
    plain = {pair: f"{_slug(pair[0])}--{_slug(pair[1])}" for pair in pairs}
    counts: dict[str, int] = {}
    for stem in plain.values():
        counts[stem] = counts.get(stem, 0) + 1
    return {
        pair: stem if counts[stem] == 1 else f"{stem}-{hashlib.sha1(repr(pair).encode()).hexdigest()[:6]}"
        for pair, stem in plain.items()
    }


# -- costs -----------------------------------------------------------------------------------------------------


def _trainable(p: Point) -> float | None:
    return _finite(p.trainable)


def _memory(p: Point) -> float | None:
    return _finite(p.peak_mib)


def _train_time(p: Point) -> float | None:
    """Training seconds; a point that trains nothing (0 trainable parameters) and has no train time counts 0 s."""
    seconds = _finite(p.train_s)
    if seconds is None and _finite(p.trainable) == 0:
        return 0.0
    return seconds


def _memory_label(points: Sequence[Point]) -> tuple[str, bool]:
    """The memory axis label and whether the points mix GPU and RSS measurements."""
    kinds = {p.memory_kind or "unknown" for p in points}
    if kinds == {"GPU"}:
        return "peak GPU memory, MiB (torch max allocated)", False
    if kinds == {"RSS"}:
        return "peak RSS, MiB (cell process resident set)", False
    return f"peak memory, MiB (mixed: {' / '.join(sorted(kinds))}, see markers)", True


# -- drawing ---------------------------------------------------------------------------------------------------


def _set_xscale(ax: Any, xs: Sequence[float], *, always_log: bool) -> str:
    """Make the x axis log (symlog when there are zeros) if ``always_log`` or the non-zero values span more than
    :data:`LOG_SPAN`; returns the words the axis label gets ("" for a linear axis)."""
    positive = [x for x in xs if x > 0]
    if not positive or not (always_log or max(positive) / min(positive) > LOG_SPAN):
        return ""
    if len(positive) < len(xs):
        ax.set_xscale("symlog", linthresh=min(positive), linscale=0.5)
        return "symlog: linear from 0 to the smallest non-zero value, log above"
    ax.set_xscale("log")
    return "log scale"


def _std(p: Point) -> float:
    std = _finite(p.quality_std)
    return std if std is not None and std > 0 else 0.0


def _quality_label(points: Sequence[Point]) -> str:
    metrics = sorted({p.metric for p in points})
    better = "higher" if points[0].higher_is_better else "lower"
    return f"{' / '.join(metrics)} ({better} is better; mean ± std over seeds)"


def _title(task: str, model: str, points: Sequence[Point], what: str) -> str:
    return f"{task} · {model}: {' / '.join(sorted({p.metric for p in points}))} {what}"


def _cost_figure(plt: Any, task: str, model: str, points: Sequence[Point], plot: str) -> Any | None:
    """One quality-vs-cost figure, or ``None`` when no point has that cost."""
    cost, name, always_log, what = {
        "quality-vs-trainable": (_trainable, "trainable parameters", True, "trainable parameters"),
        "quality-vs-memory": (_memory, "", False, "peak memory"),
        "quality-vs-train-time": (_train_time, "train time, s", False, "train time"),
    }[plot]
    drawn = [(c, p) for p in points if (c := cost(p)) is not None]
    if not drawn:
        return None
    mixed = False
    if plot == "quality-vs-memory":
        name, mixed = _memory_label([p for _, p in drawn])
    front_points = pareto_front([p for _, p in drawn], cost)
    front = {id(p) for p in front_points}
    fig, ax = plt.subplots(figsize=FIGSIZE)
    marker_of = {"GPU": "o", "RSS": "s"}
    groups: dict[tuple[bool, str], list[tuple[float, Point]]] = {}
    for c, p in drawn:
        kind = (p.memory_kind or "unknown") if mixed else ""
        groups.setdefault((id(p) in front, kind), []).append((c, p))
    for (on_front, kind), members in sorted(groups.items(), key=lambda g: (not g[0][0], g[0][1])):
        label = "on the Pareto front" if on_front else "dominated"
        ax.errorbar(
            [c for c, _ in members],
            [p.quality for _, p in members],
            yerr=[_std(p) for _, p in members],
            fmt=marker_of.get(kind, "D") if mixed else "o",
            color="C3" if on_front else "C0",
            ecolor="0.55",
            capsize=3,
            markersize=6,
            label=f"{label} ({kind})" if mixed else label,
            zorder=3,
        )
    for c, p in drawn:
        ax.annotate(p.strategy, (c, p.quality), xytext=(4, 4), textcoords="offset points", fontsize=7, zorder=4)
    ax.step(
        [cost(p) for p in front_points],
        [p.quality for p in front_points],
        where="post",
        color="C3",
        linestyle="--",
        linewidth=1.2,
        label="Pareto front",
        zorder=2,
    )
    scale = _set_xscale(ax, [c for c, _ in drawn], always_log=always_log)
    if plot == "quality-vs-trainable" and scale.startswith("symlog"):
        scale = "symlog; 0 = nothing trained (zero-/few-shot)"
    ax.set_xlabel(f"{name} ({scale})" if scale else name)
    ax.set_ylabel(_quality_label(points))
    ax.set_title(_title(task, model, points, f"vs {what}"))
    ax.margins(x=0.12, y=0.12)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return fig


def _k_curves(points: Sequence[Point]) -> dict[str, list[tuple[int, Point]]]:
    """Base strategy -> its k-shot variants sorted by k, for bases with at least two variants."""
    curves: dict[str, list[tuple[int, Point]]] = {}
    for p in points:
        match = K_VARIANT.match(p.strategy)
        if match:
            curves.setdefault(match["base"], []).append((int(match["k"]), p))
    return {base: sorted(v, key=lambda t: t[0]) for base, v in sorted(curves.items()) if len(v) >= 2}


def _k_figure(plt: Any, task: str, model: str, points: Sequence[Point]) -> Any | None:
    curves = _k_curves(points)
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=FIGSIZE)
    ks: set[int] = set()
    for base, variants in curves.items():
        ks.update(k for k, _ in variants)
        ax.errorbar(
            [k for k, _ in variants],
            [p.quality for _, p in variants],
            yerr=[_std(p) for _, p in variants],
            marker="o",
            capsize=3,
            label=base,
        )
    shown = [p for variants in curves.values() for _, p in variants]
    ax.set_xticks(sorted(ks))
    ax.set_xlabel("k (in-context examples per prompt)")
    ax.set_ylabel(_quality_label(shown))
    ax.set_title(_title(task, model, shown, "vs k (k-shot learning curve)"))
    ax.margins(x=0.08, y=0.12)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return fig


def _step_figure(plt: Any, task: str, model: str, times: Mapping[str, Sequence[float]]) -> Any | None:
    data = {s: v for s, t in sorted(times.items()) if (v := [x for x in map(_finite, t) if x is not None])}
    if not data:
        return None
    fig, ax = plt.subplots(figsize=FIGSIZE)
    ax.boxplot(list(data.values()), flierprops={"markersize": 3})
    ax.set_xticks(
        range(1, len(data) + 1),
        [f"{s}\n(n={len(v)})" for s, v in data.items()],
        fontsize=8,
        rotation=30 if len(data) > 4 else 0,
    )
    values = [x for v in data.values() for x in v if x > 0]
    if values and max(values) / min(values) > LOG_SPAN:
        ax.set_yscale("log")
    ax.set_ylabel("seconds per training step (warm-up excluded)" + (", log scale" if ax.get_yscale() == "log" else ""))
    ax.set_title(f"{task} · {model}: time per training step")
    ax.grid(True, axis="y", alpha=0.3)
    return fig


def _figures(
    plt: Any, task: str, model: str, points: Sequence[Point], times: Mapping[str, Sequence[float]]
) -> Iterator[tuple[str, Any | None]]:
    """(plot name, figure or ``None``) for each plot of one (task, model), drawn one at a time."""
    if points:
        for plot in ("quality-vs-trainable", "quality-vs-memory", "quality-vs-train-time"):
            yield plot, _cost_figure(plt, task, model, points, plot)
        yield "quality-vs-k", _k_figure(plt, task, model, points)
    yield "step-times", _step_figure(plt, task, model, times)


# -- writing ---------------------------------------------------------------------------------------------------


def write_plots(
    points: Sequence[Point],
    directory: Path,
    *,
    step_times: Mapping[Key, Sequence[float]] = {},  # noqa: B006 - read only
    formats: Sequence[str] = ("png", "svg"),
) -> list[Path]:
    """Write the plots described in the module docstring into ``directory`` (created if missing), one set per
    (task, model), each in every format of ``formats`` (any format matplotlib's Agg backend saves: png, svg, pdf);
    returns the written paths, sorted. Points with a non-finite quality are left out; a plot with nothing to show
    is not written.

    :param step_times: (task, model, strategy) -> seconds per training step, warm-up excluded.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_pair: dict[tuple[str, str], list[Point]] = {}
    for p in points:
        if _finite(p.quality) is not None:
            by_pair.setdefault((p.task, p.model), []).append(p)
    steps: dict[tuple[str, str], dict[str, Sequence[float]]] = {}
    for (task, model, strategy), times in step_times.items():
        steps.setdefault((task, model), {})[strategy] = times
    stems = _stems(sorted(set(by_pair) | set(steps)))
    directory = Path(directory)
    written: list[Path] = []
    rc = {"svg.hashsalt": "harness-plots", "figure.max_open_warning": 0}
    with matplotlib.rc_context(rc):
        for (task, model), stem in sorted(stems.items()):
            pts = sorted(by_pair.get((task, model), []), key=lambda p: p.strategy)
            for plot, fig in _figures(plt, task, model, pts, steps.get((task, model), {})):
                if fig is None:
                    continue
                try:
                    fig.tight_layout()
                    directory.mkdir(parents=True, exist_ok=True)
                    for fmt in formats:
                        path = directory / f"{stem}--{plot}.{fmt}"
                        metadata = {"Date": None} if fmt in ("svg", "pdf") else None
                        fig.savefig(path, format=fmt, dpi=150, metadata=metadata)
                        written.append(path)
                finally:
                    plt.close(fig)
    return sorted(written)
