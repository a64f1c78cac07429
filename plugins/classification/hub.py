"""Classification data from Hugging Face datasets: a hub id (``dataset``) or a local dataset folder (``dataset_path``).

``dataset`` is loaded with :func:`datasets.load_dataset` (from the local datasets cache when offline);
``dataset_path`` is a folder ``load_dataset`` reads (Parquet / JSON Lines / CSV / Arrow files named by split, such as
``train.parquet`` and ``test.jsonl``, or the hub's ``data/`` layout) or one written by ``save_to_disk``. A
:class:`datasets.ClassLabel` label column gives the label set, in its order.

:mod:`harness.tasklib.datahub` finds and loads the dataset (and checks the options at validate time, without importing
``datasets``); this module turns its splits into rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from harness.errors import HarnessError
from harness.tasklib.datahub import hub_splits


class _Row(NamedTuple):
    """One labelled row as read, before it becomes an :class:`~harness_plugins.classification.data.Example`: from a
    dataset split here, from a data file in :mod:`harness_plugins.classification.data`."""

    text: str
    text_pair: str | None
    label: str
    place: str  # where the label was read: "file:line", or "dataset 'id' split 'train' row 7"


def _column_kind(feature: Any) -> str:
    """``"class"``, ``"int"``, ``"str"`` or the feature's repr, for a column's feature."""
    import datasets

    if isinstance(feature, datasets.ClassLabel):
        return "class"
    if isinstance(feature, datasets.Value):
        if feature.dtype in ("string", "large_string"):
            return "str"
        if feature.dtype.startswith(("int", "uint")):
            return "int"
    return repr(feature)


def _rows(ds: Any, options: Mapping[str, Any], where: str) -> list[_Row]:
    text_col, pair_col, label_col = options["text_column"], options.get("text_pair_column"), options["label_column"]
    ds = ds.with_format(None)  # plain Python values whatever format the dataset was saved with
    features = ds.features
    for key, column in (("text_column", text_col), ("text_pair_column", pair_col), ("label_column", label_col)):
        if column and column not in features:
            raise HarnessError(f"{where}: no column {column!r} (columns: {', '.join(features)}); set {key}")
    for column in filter(None, (text_col, pair_col)):
        if _column_kind(features[column]) != "str":
            raise HarnessError(f"{where}: column {column!r} holds {features[column]!r}, expected text")
    kind = _column_kind(features[label_col])
    if kind not in ("class", "int", "str"):
        raise HarnessError(
            f"{where}: label column {label_col!r} holds {kind}; expected a ClassLabel, integers or strings"
        )
    names = features[label_col].names if kind == "class" else None
    # ds[column][:] is a list in every datasets version (datasets 4+ returns a lazy Column, slow to iterate).
    texts, labels = ds[text_col][:], ds[label_col][:]
    pairs = ds[pair_col][:] if pair_col else [None] * len(texts)
    rows = []
    for i, (text, pair, value) in enumerate(zip(texts, pairs, labels, strict=True)):
        place = f"{where} row {i}"
        if text is None or (pair_col and pair is None):
            column = text_col if text is None else pair_col
            raise HarnessError(f"{place}: missing text in column {column!r}")
        if value is None or not str(value).strip():
            raise HarnessError(f"{place}: empty label")
        if names is not None:
            if not 0 <= value < len(names):
                raise HarnessError(
                    f"{place}: label {value} is not a class of {label_col!r} ({', '.join(names)}); -1 marks an "
                    "unlabelled split (such as GLUE's test sets): choose a labelled one with test_split"
                )
            value = names[value]
        rows.append(_Row(text, pair, str(value).strip(), place))
    if not rows:
        raise HarnessError(f"{where}: no examples (the split is empty)")
    return rows


def read_hub(options: Mapping[str, Any]) -> tuple[dict[str, tuple[str, list[_Row]]], tuple[str, ...] | None]:
    """Rows of each split the dataset has, keyed ``train`` / ``validation`` / ``test`` (a missing validation or test
    split under its default name is left out, to be carved from train), and the ClassLabel names of train's label
    column (``None`` when it is not a ClassLabel). Raises :class:`HarnessError` naming dataset, split and row."""
    import datasets

    _, splits = hub_splits(options)
    out = {split: (where, _rows(part, options, where)) for split, (where, part) in splits.items()}
    feature = splits["train"][1].features[options["label_column"]]
    return out, tuple(feature.names) if isinstance(feature, datasets.ClassLabel) else None
