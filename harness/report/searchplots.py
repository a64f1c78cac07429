"""Plots of hyperparameter searches (``harness report --plots DIR``, with :mod:`harness.report.plots`' figures).

One figure per search, ``{task}--{model}--search-{strategy}.{format}``: one panel per searched key, the validation
metric (y) against the key's value (x). Each seed's validation score is a small dot, each setting's mean ± sample
std over seeds a marker with error bars, and the selected setting a star. A numeric axis whose positive values span
at least 10 times is logarithmic (learning rates); other values (text, booleans, lists) are placed in the order
they first appear. With several keys a panel's x positions repeat across the other keys' values: the panel shows how
the score moves with that key over all settings. Light to import: matplotlib only inside :func:`write_search_plots`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.api.cells import format_value
from harness.report.plots import plot_stem
from harness.report.search import Search

#: Positive numeric values spanning at least this ratio get a log axis.
LOG_RATIO = 10.0


def _numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _figure(plt: Any, search: Search) -> Any | None:
    keys = list(dict.fromkeys(k for s in search.settings for k in s.values))
    scored = [s for s in search.settings if s.validation]
    if not keys or not scored:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(4.8 * len(keys), 4.2), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        values = [s.values.get(key) for s in scored]
        numeric = _numeric(values)
        order = {format_value(v): i for i, v in enumerate(dict.fromkeys(format_value(v) for v in values))}

        def x_of(value: Any, numeric: bool = numeric, order: dict[str, int] = order) -> float:
            return float(value) if numeric else float(order[format_value(value)])

        for position, setting in enumerate(search.settings):
            if not setting.validation:
                continue
            x = x_of(setting.values.get(key))
            seeds = list(setting.validation.values())
            ax.scatter([x] * len(seeds), seeds, s=10, color="0.6", zorder=2)
            score = setting.score
            assert score is not None
            chosen = position == search.selected
            ax.errorbar([x], [score.mean], yerr=[score.std if score.n > 1 else 0.0], fmt="*" if chosen else "o",
                        markersize=14 if chosen else 6, color="tab:red" if chosen else "tab:blue", capsize=3,
                        zorder=3, label="selected" if chosen else None)  # fmt: skip
        positive = [float(v) for v in values if numeric and float(v) > 0]
        if numeric and positive and len(positive) == len(values) and max(positive) / min(positive) >= LOG_RATIO:
            ax.set_xscale("log")
        if not numeric:
            ax.set_xticks(list(order.values()), list(order))
        ax.set_xlabel(key)
        ax.set_ylabel(f"validation {search.metric or 'metric'} (mean ± std over seeds)")
        ax.grid(True, alpha=0.3)
    axes[0][0].legend(loc="best")
    fig.suptitle(f"{search.task} · {search.model} · {search.strategy}: {search.sampler} search, "
                 f"{search.cost.trials} trials")  # fmt: skip
    return fig


def write_search_plots(searches: Sequence[Search], directory: Path, formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    """Write one figure per search into ``directory``; the written paths, sorted."""
    if not searches:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []
    with matplotlib.rc_context({"svg.hashsalt": "harness-plots", "figure.max_open_warning": 0}):
        for search in searches:
            fig = _figure(plt, search)
            if fig is None:
                continue
            try:
                fig.tight_layout()
                Path(directory).mkdir(parents=True, exist_ok=True)
                stem = plot_stem(search.task, search.model, "search-" + re.sub(r"[^A-Za-z0-9._=+-]+", "_", search.strategy))
                for fmt in formats:
                    path = Path(directory) / f"{stem}.{fmt}"
                    fig.savefig(path, format=fmt, dpi=150, metadata={"Date": None} if fmt in ("svg", "pdf") else None)
                    written.append(path)
            finally:
                plt.close(fig)
    return sorted(written)
