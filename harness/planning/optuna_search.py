"""Optuna searches (``sampler = "optuna"``): trials proposed by Optuna's TPE sampler from earlier trials' results.

Later trials depend on earlier results, so such a search cannot be planned at once. :func:`optuna_settings` replays
the search from the records it already has: a study with ``TPESampler(seed=seed)`` asks ``batch`` trials (default
1), each trial's cells (one per seed) are looked up, and when all of them have ended their mean validation metric
(over the seeds that ended ok; a trial with none is told as failed) is told before the next batch is asked. The first
batch with a cell that has not ended stops the replay: its settings are what runs next. ``harness run`` runs them,
then plans again, until the search has ``trials`` settings or nothing new can run. The same records always replay
to the same settings, so re-running a finished search recomputes nothing, and an interrupted one resumes where it
stopped. ``validate`` and ``--dry-run`` show the next batch only.

Lists become categorical distributions (by position, so any value can be listed), ranges float or integer
distributions (``log = true``: log scale); drawn floats are rounded to 3 significant digits, as in a random search.
A setting Optuna asks twice runs once (the same cells) and is told twice. Selection among the finished trials is the
report's, on validation data, as for every search (:mod:`harness.report.search`). Optuna is imported only here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness.planning.search import SearchSpec

#: What a lookup returns for a trial whose cells have not all ended.
PENDING = object()


def _distribution(dim: Any) -> Any:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if not dim.is_range:
        return CategoricalDistribution(tuple(range(len(dim.values))))
    if dim.kind == "int":
        return IntDistribution(int(dim.low), int(dim.high), log=dim.log)
    return FloatDistribution(dim.low, dim.high, log=dim.log)


def _decode(spec: SearchSpec, params: dict[str, Any]) -> dict[str, Any]:
    setting = {}
    for dim in spec.dimensions:
        value = params[dim.key]
        if not dim.is_range:
            value = dim.values[value]
        elif dim.kind == "float":
            value = float(f"{value:.3g}")
        setting[dim.key] = value
    return setting


def optuna_settings(spec: SearchSpec, outcome: Callable[[dict[str, Any]], Any]) -> list[dict[str, Any]]:
    """The settings of ``spec``'s trials asked so far, in order: every told batch and the first untold one.

    :param outcome: a setting -> its mean validation metric, ``None`` when no seed ended ok, or :data:`PENDING`.
    """
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=spec.seed or 0))
    distributions = {dim.key: _distribution(dim) for dim in spec.dimensions}
    total = spec.trials or 0
    asked: list[dict[str, Any]] = []
    while len(asked) < total:
        batch = [study.ask(distributions) for _ in range(min(spec.batch or 1, total - len(asked)))]
        settings = [_decode(spec, trial.params) for trial in batch]
        asked += settings
        results = [outcome(setting) for setting in settings]
        if any(result is PENDING for result in results):
            break
        for trial, result in zip(batch, results, strict=True):
            if result is None:
                study.tell(trial, state=TrialState.FAIL)
            else:
                study.tell(trial, float(result))
    return asked
