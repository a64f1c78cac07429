"""Base classes of the components plugins register: tasks, strategies, model sources, executors, reporters.

This module never imports torch: component classes are registered and validated in the parent process (``harness
plugins``, ``harness validate``, planning), and their heavy methods (``setup``, ``apply``, ``open``) run only inside
the cell's worker process, importing torch there.
"""

from __future__ import annotations

import abc
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from harness.api.options import Option
from harness.errors import Problem

if TYPE_CHECKING:  # pragma: no cover
    from harness.api.budget import Budget
    from harness.api.cells import Cell
    from harness.api.itemstats import ItemStats

#: Model families. Encoders use a task head; decoders and encoder-decoders a text-to-text formulation.
FAMILIES = ("encoder", "decoder", "encoder-decoder")


@dataclass(frozen=True)
class CheckContext:
    """What a component's :meth:`Component.check` may consult: the suite file's folder and whether we are offline;
    and where it leaves warnings (:meth:`warn`): things that do not stop a run but make its numbers doubtful, such as
    a label column with a single class. ``harness validate`` and ``harness run`` print them, placed in the file."""

    base_dir: Path
    offline: bool
    warnings: list[Problem] = field(default_factory=list)

    def warn(self, where: str, message: str) -> None:
        """Record a warning about the suite key ``where`` (e.g. ``tasks.sentiment``)."""
        self.warnings.append(Problem(where, message))


class Component:
    """A named, documented, configurable piece registered by a plugin."""

    #: What kind of component this is; set by each base class.
    kind: ClassVar[str] = "component"
    #: The name users write in suite files (``type = "..."``) and on the command line.
    name: ClassVar[str] = ""
    #: One line for ``harness plugins``.
    description: ClassVar[str] = ""
    #: Declared options of tasks, strategies and model sources: validated against the suite before anything runs.
    options: ClassVar[tuple[Option, ...]] = ()

    def check(self, options: Mapping[str, Any], where: str, ctx: CheckContext) -> list[Problem]:
        """Cheap checks beyond option types (files readable, ids reachable). Must not import torch."""
        return []

    def describe(self) -> dict[str, Any]:
        """What ``harness plugins --json`` shows for this component."""
        return {"name": self.name, "description": self.description}


@dataclass(frozen=True)
class CellContext:
    """Everything a component needs to know about the cell it runs in (inside the worker process).

    :param cell: the planned cell (names, options, budget, seed).
    :param device: ``"cpu"`` or ``"cuda"``; with CUDA the worker sees exactly its pinned GPU(s).
    :param out_dir: the cell's own folder, for predictions and artefacts.
    :param progress: call with ``(phase, done, total)`` to update the progress display.
    :param load_options: keyword arguments the cell's strategy asks the model source to load the model with
        (:meth:`Strategy.load_options`, e.g. ``quantization_config``); empty for most strategies.
    """

    cell: Cell
    device: str
    out_dir: Path
    progress: Callable[[str, int, int], None] = field(default=lambda phase, done, total: None)
    load_options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def seed(self) -> int:
        return self.cell.seed

    @property
    def budget(self) -> Budget:
        return self.cell.budget


@dataclass(frozen=True)
class EvalResult:
    """What a task's evaluation returns: metrics, per-example predictions, and the work done (for throughput).

    ``tokens`` counts the input tokens the model was given (for text-to-text tasks the prompts, demonstrations
    included, counted once per label where each label is scored after its prompt); ``shots`` is the mean number of
    in-context demonstrations per prompt (``None`` without them)."""

    metrics: Mapping[str, float]
    predictions: Sequence[Mapping[str, Any]]
    samples: int
    tokens: int
    shots: float | None = None


class LoadedModel(abc.ABC):
    """A model source opened inside the worker: it builds the tokenizer and the model with a task's head."""

    #: One of :data:`FAMILIES`.
    family: str = "encoder"
    #: Seconds of one-off preparation spent while loading (a cache built on first use, e.g. a dequantised copy);
    #: the cell leaves them out of ``load_s`` and records them as ``timing.one_off_s``.
    one_off_s: float = 0.0

    @abc.abstractmethod
    def tokenizer(self) -> Any:
        """Return the tokenizer (a ``transformers`` tokenizer)."""

    @abc.abstractmethod
    def model(self, auto_class: Any, **kwargs: Any) -> Any:
        """Build the model through ``auto_class`` (e.g. ``AutoModelForSequenceClassification``) with ``kwargs``
        such as ``num_labels``; pretrained weights where the source has them."""


class TaskRun(abc.ABC):
    """A task set up for one cell, inside the worker: encoded data, the model with the task's head, scoring."""

    #: Name of the metric used for early stopping and the comparison table.
    primary_metric: str = ""
    #: Whether larger values of the primary metric are better.
    greater_is_better: bool = True
    #: Parameter-name prefixes of the task head, counted separately from the backbone.
    head_prefixes: tuple[str, ...] = ()
    #: Non-numeric facts about the scoring, copied into the record's ``metric_info``: the metric library and its
    #: version (e.g. ``{"metric_library": "seqeval 1.2.2"}``), sacreBLEU's signature, the prompt template used.
    metadata: Mapping[str, str] = {}

    @abc.abstractmethod
    def build_model(self, loaded: LoadedModel) -> Any:
        """Return the model with the task's head (on CPU; the cell moves it)."""

    @abc.abstractmethod
    def examples(self, split: str) -> Sequence[Mapping[str, Any]]:
        """Encoded examples of ``split`` (``train``, ``validation``, ``test``), each with ``input_ids``."""

    @abc.abstractmethod
    def collate(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Pad a batch to its own longest member (never to a fixed length); return tensors incl. ``labels``."""

    @abc.abstractmethod
    def evaluate(self, model: Any, split: str, batch_size: int, device: str) -> EvalResult:
        """Score ``model`` on ``split``; predictions carry ``id``, ``input``, ``prediction``, ``reference``."""

    def use_demonstrations(self, k: int, seed: int) -> None:
        """Prefix every evaluation prompt with ``k`` demonstrations drawn from train by ``seed`` (in-context
        learning; ``k = 0`` is zero-shot). Text-to-text runs implement it; a task head cannot take demonstrations."""
        from harness.errors import HarnessError

        raise HarnessError(f"{type(self).__name__} cannot take in-context demonstrations (it has no prompt)")

    def loss_units(self, batch: Mapping[str, Any]) -> int:
        """How many units the model's loss averages over in a collated batch: examples for one label per example,
        labelled tokens (``labels != -100``) for token-level labels. Micro-batches of one optimizer step are weighted
        by their share of units, so the accumulated gradient equals the whole batch's."""
        labels = batch.get("labels")
        if labels is None or labels.dim() < 2:
            return len(batch["input_ids"])
        return int((labels != -100).sum())

    def prepare(self, split: str) -> None:
        """Do the one-off work of scoring ``split`` (encoding it) now, so evaluation time and throughput measure
        inference alone; the cell calls it before starting the evaluation clock."""
        self.examples(split)

    def length(self, example: Mapping[str, Any]) -> int:
        """Token length of an encoded example (length-grouped batching and token counts)."""
        return len(example["input_ids"])


class Task(Component):
    """A task: data, a model head or prompt formulation, and the metrics papers use."""

    kind: ClassVar[str] = "task"
    #: Model families this task can run with.
    families: ClassVar[frozenset[str]] = frozenset({"encoder"})

    @abc.abstractmethod
    def setup(self, options: Mapping[str, Any], ctx: CellContext) -> TaskRun:
        """Load and encode the data for one cell (in the worker)."""

    def item_statistics(
        self, predictions: Sequence[Mapping[str, Any]], metric: str, options: Mapping[str, Any]
    ) -> ItemStats | None:
        """Additive per-item statistics of ``metric`` over a cell's saved prediction rows, for paired significance
        tests in reports (approximate randomisation swaps two cells' rows item by item).

        Row ``i`` of the result's ``values`` belongs to ``predictions[i]`` (its ``id``); the result's ``metric`` of the
        column sums equals the metric the task recorded for these predictions (to rounding, 1e-9). ``options`` are the
        task's resolved options as the record stores them (``record["config"]["task"]["options"]``).

        Called by ``harness report`` in the main process, so it must not import torch (nor transformers): import the
        metric library inside the method. Returns ``None`` when the metric has no additive per-item form (counts such
        as ``n``) or is unknown, and when the rows cannot be read (a failed or partial cell's rows lacking fields); it
        never raises for those. The default: ``None`` for every metric."""
        return None

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "families": sorted(self.families)}


class Strategy(Component):
    """A tuning strategy: what is trained (or not) and how the model is prepared."""

    kind: ClassVar[str] = "strategy"
    #: False for strategies that only evaluate (zero-/few-shot); the cell then skips training.
    trains: ClassVar[bool] = True
    #: Model families the strategy supports.
    families: ClassVar[frozenset[str]] = frozenset(FAMILIES)
    #: Budget values this strategy needs by default (e.g. a higher learning rate); the suite overrides them.
    budget_defaults: ClassVar[Mapping[str, Any]] = {}

    def supports(self, task: Task, family: str) -> str | None:
        """``None`` when a cell of ``task`` on a ``family`` model can run; otherwise the reason it is skipped."""
        if family not in self.families:
            return f"strategy {self.name!r} does not support {family} models"
        return None

    def budget_defaults_for(self, options: Mapping[str, Any]) -> Mapping[str, Any]:
        """The budget defaults of one suite entry with these (resolved) options: :attr:`budget_defaults` unless the
        options change them (the generic ``peft`` strategy's learning rate depends on its ``method``)."""
        return self.budget_defaults

    def variants(self, options: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """The cells one suite entry of this strategy expands into, as (name suffix, options) pairs: one cell with
        the options as given by default; ``few_shot`` with ``k = [1, 4, 8]`` gives three (``few_shot@k=1``, ...).
        Each variant's name is the suite's strategy name, ``@`` and its suffix (no ``@`` for an empty suffix)."""
        return [("", dict(options))]

    def load_options(self, run: TaskRun, options: Mapping[str, Any], ctx: CellContext) -> Mapping[str, Any]:
        """Keyword arguments the model must be loaded with for this strategy (``from_pretrained``'s, e.g.
        ``quantization_config`` for a 4-bit base), called in the worker after ``Task.setup`` and before
        ``ModelSource.open``, which finds them as ``ctx.load_options``. A model source that cannot honour them
        (:attr:`ModelSource.takes_load_options` false) fails the cell. Default: none."""
        return {}

    @abc.abstractmethod
    def apply(self, model: Any, run: TaskRun, options: Mapping[str, Any], ctx: CellContext) -> Any:
        """Prepare ``model`` for training (freeze, wrap in adapters, ...) and return the model to train."""

    def stored_bytes(self, model: Any) -> int | None:
        """Bytes of what must be saved to reproduce the tuned ``model`` from the pretrained one, when that is not
        simply its trainable parameters (P-tuning trains a prompt encoder but stores only the prompts it yields);
        ``None`` keeps the default, the bytes of the trainable parameters."""
        return None

    def save(self, model: Any, directory: Path) -> None:
        """Save what reproduces the tuned model (``--save-artifacts``): by default the model's ``save_pretrained`` in
        safetensors, which for a PEFT model writes only the adapter weights and the trained head."""
        save_artifact(model, directory)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(), "families": sorted(self.families), "trains": self.trains,
            "budget_defaults": dict(self.budget_defaults),
        }


_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def dtype_bytes(dtype: str | None) -> int | None:
    """Bytes per weight of a model source's ``dtype`` option (``None`` for ``auto`` or unknown): what
    :meth:`ModelSource.estimate_size` reports as :attr:`ModelSize.bytes_per_param`."""
    return _DTYPE_BYTES.get(str(dtype))


@dataclass(frozen=True)
class ModelSize:
    """A model's size, found cheaply at planning time (config files, file headers; never the weights).

    :param parameters: parameter count.
    :param layers: transformer blocks (encoder plus decoder layers); ``None`` when unknown.
    :param hidden: hidden size. :param heads: attention heads. :param vocab: vocabulary size.
    :param bytes_per_parameter: bytes of one weight as the cell loads it (4 for float32), when known.
    """

    parameters: int
    layers: int | None = None
    hidden: int | None = None
    heads: int | None = None
    vocab: int | None = None
    bytes_per_parameter: int | None = None


class ModelSource(Component):
    """Where model weights come from (the hub, a local folder, a random tiny model)."""

    kind: ClassVar[str] = "model source"
    #: Whether :meth:`open` passes ``ctx.load_options`` (a strategy's :meth:`Strategy.load_options`) to the model's
    #: loading; a cell whose strategy asks for load options from a source without it fails with one line.
    takes_load_options: ClassVar[bool] = False

    @abc.abstractmethod
    def family(self, options: Mapping[str, Any], ctx: CheckContext) -> str:
        """The model family, found cheaply at planning time (from options or a config file, never the weights)."""

    def label(self, options: Mapping[str, Any]) -> str:
        """A short human-readable identity of the model, for records and tables."""
        return self.name

    def estimate_size(self, options: Mapping[str, Any]) -> ModelSize | None:
        """The model's size at planning time (config files, file headers; never the weights, never torch), for the
        GPU memory estimates of :mod:`harness.run.estimates`; ``None`` (the default) when unknown: its cells then get a
        GPU to themselves."""
        return None

    @abc.abstractmethod
    def open(self, options: Mapping[str, Any], ctx: CellContext) -> LoadedModel:
        """Open the source inside the worker."""


class Executor(Component):
    """How cells run: local processes, or a cluster engine."""

    kind: ClassVar[str] = "executor"

    @abc.abstractmethod
    def execute(self, run: Any) -> None:
        """Run the cells of ``run`` (a :class:`harness.run.runner.SuiteRun`), each in its own process, reporting each
        ending through ``run.finished(...)``."""


class Reporter(Component):
    """An output format for ``harness report``.

    A ``"text"`` reporter implements :meth:`render`; the CLI prints its text or writes it to ``--output FILE``. A
    ``"directory"`` reporter (TensorBoard event files, say) implements :meth:`write` and needs ``--output DIR``.
    """

    kind: ClassVar[str] = "reporter"
    #: ``"text"`` (:meth:`render`) or ``"directory"`` (:meth:`write`).
    output: ClassVar[str] = "text"

    def render(self, report: Any) -> str:
        """The report as text. ``report`` is a :class:`harness.report.reporting.Report`: ``report.rows`` are the records
        (the JSON contract of :mod:`harness.results.records`), ``report.tables`` the pivots with their tests."""
        raise NotImplementedError(f"reporter {self.name!r} writes a directory: use --output DIR")

    def write(self, report: Any, directory: Path) -> list[Path]:
        """Write the report into ``directory`` (created if missing); the files written."""
        raise NotImplementedError(f"reporter {self.name!r} renders text")


def save_artifact(model: Any, directory: Path) -> None:
    """``save_pretrained`` in safetensors (transformers 5 always writes safetensors; older versions and PEFT take
    ``safe_serialization``)."""
    kwargs = {}
    if "safe_serialization" in inspect.signature(model.save_pretrained).parameters:
        kwargs["safe_serialization"] = True
    model.save_pretrained(directory, **kwargs)
