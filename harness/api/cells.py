"""A planned cell: one task × strategy × model × seed with everything resolved, its key and its folder name.

The unit every layer passes around (planning makes cells, executors and workers run them, records and reports name
them); light: standard library and :mod:`harness.api.budget` only.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.api.budget import Budget

#: Characters of :attr:`Cell.cell_id` kept in a cell's folder name.
MAX_ID_IN_DIRNAME = 160


@dataclass(frozen=True)
class Cell:
    """One planned run: a task, a strategy, a model and a seed, with everything resolved.

    ``key`` hashes the full resolved configuration: changing any option changes the key, so only affected cells
    rerun; the harness version and plugin versions are recorded but not hashed.
    """

    suite: str
    task: str
    task_type: str
    task_options: Mapping[str, Any]
    strategy: str
    strategy_type: str
    strategy_options: Mapping[str, Any]
    model: str
    model_source: str
    model_options: Mapping[str, Any]
    model_family: str
    seed: int
    budget: Budget
    trust_remote_code: bool = False
    skip_reason: str | None = None
    #: The model's identity as its source tells it (a hub id, a folder name, a tiny config), for reports.
    model_label: str = ""
    #: A trial of a hyperparameter search (:mod:`harness.planning.search`): ``values`` (the searched keys and the
    #: values this trial sets, already applied to ``budget`` and the options), ``search`` (what scope it belongs
    #: to: ``model/task/strategy``), ``index`` and ``trials`` (its place in the search), ``sampler`` and ``metric``.
    #: ``None`` for a cell outside any search.
    trial: Mapping[str, Any] | None = None

    @property
    def cell_id(self) -> str:
        """Readable identity, unique within a suite: ``task--strategy--model--seedN``, and for a search's trial
        ``--`` and its values (``task--lora--model--seed0--learning_rate=0.0003+r=8``)."""
        base = f"{self.task}--{self.strategy}--{self.model}--seed{self.seed}"
        if self.trial is not None:
            base += f"--{trial_label(self.trial.get('values') or {})}"
        return _safe(base)

    def config(self) -> dict[str, Any]:
        """The resolved cell configuration (what the key hashes; the ``config`` of the report contract)."""
        return {
            "task": {"name": self.task, "type": self.task_type, "options": dict(self.task_options)},
            "strategy": {"name": self.strategy, "type": self.strategy_type, "options": dict(self.strategy_options)},
            "model": {
                "name": self.model,
                "source": self.model_source,
                "family": self.model_family,
                "label": self.model_label,
                "options": dict(self.model_options),
                "trust_remote_code": self.trust_remote_code,
            },
            "budget": self.budget.to_dict(),
            "seed": self.seed,
            **({"trial": dict(self.trial)} if self.trial is not None else {}),
        }

    @property
    def key(self) -> str:
        """Hash of :meth:`config` without ``budget.timeout_s`` (a time limit changes no result) and of a trial only
        its values (its index and the search's size change no result: a grid that grows keeps its finished trials)."""
        config = self.config()
        config["budget"].pop("timeout_s", None)
        # budget keys added later are hashed only when set away from their default, so that cells planned before
        # they existed keep their keys (and their finished results)
        for name, default in Budget.KEY_NEUTRAL_DEFAULTS.items():
            if config["budget"].get(name, default) == default:
                config["budget"].pop(name, None)
        if "trial" in config:
            config["trial"] = {"values": config["trial"].get("values")}
        blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def dirname(self) -> str:
        """The cell's folder name: its id and key, the id cut to :data:`MAX_ID_IN_DIRNAME` characters so that the
        name stays within filesystem limits (255 bytes) whatever the names in the suite; the key keeps it unique."""
        return f"{self.cell_id[:MAX_ID_IN_DIRNAME]}--{self.key[:8]}"

    def to_json(self) -> dict[str, Any]:
        return {"suite": self.suite, "skip_reason": self.skip_reason, **self.config()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Cell:
        task, strategy, model = data["task"], data["strategy"], data["model"]
        return cls(
            suite=data["suite"],
            task=task["name"],
            task_type=task["type"],
            task_options=task["options"],
            strategy=strategy["name"],
            strategy_type=strategy["type"],
            strategy_options=strategy["options"],
            model=model["name"],
            model_source=model["source"],
            model_options=model["options"],
            model_family=model["family"],
            model_label=model.get("label", ""),
            trust_remote_code=model.get("trust_remote_code", False),
            seed=data["seed"],
            budget=Budget.from_dict(data["budget"]),
            skip_reason=data.get("skip_reason"),
            trial=data.get("trial"),
        )


def format_value(value: Any) -> str:
    """A searched value as it appears in cell ids and tables: floats in ``%g`` form, lists joined by commas."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ",".join(format_value(v) for v in value)
    return str(value)


def trial_label(values: Mapping[str, Any]) -> str:
    """``key=value`` pairs of a trial's values, joined by ``+`` in the order they were written."""
    return "+".join(f"{key}={format_value(value)}" for key, value in values.items())


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", text)
