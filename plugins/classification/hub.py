"""Classification data from Hugging Face datasets: a hub id (``dataset``) or a local dataset folder (``dataset_path``).

``dataset`` is loaded with :func:`datasets.load_dataset` (from the local datasets cache when offline);
``dataset_path`` is a folder ``load_dataset`` reads (Parquet / JSON Lines / CSV / Arrow files named by split, such as
``train.parquet`` and ``test.jsonl``, or the hub's ``data/`` layout) or one written by ``save_to_disk``. A
:class:`datasets.ClassLabel` label column gives the label set, in its order.

:func:`check_hub` runs at validate time and never imports ``datasets``: when offline it looks for the dataset's folder
in the datasets cache; online it checks nothing over the network (a missing dataset is reported when a cell loads it).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.errors import HarnessError, Problem

from .data import SPLITS, _Row

_TRUE = {"1", "true", "yes", "on"}
# A hub repository id: "name" or "namespace/name" (letters, digits, "-", "_", "."), as huggingface_hub accepts them.
_HUB_ID = re.compile(r"[A-Za-z0-9](?:[\w.-]{0,94}[A-Za-z0-9])?(?:/[A-Za-z0-9](?:[\w.-]{0,94}[A-Za-z0-9])?)?")
# datasets.naming.camelcase_to_snakecase, which names a dataset's folder in the cache.
_UPPER_UPPER = re.compile(r"([A-Z]+)([A-Z][a-z])")
_LOWER_UPPER = re.compile(r"([a-z\d])([A-Z])")


def datasets_offline() -> bool:
    """Whether ``datasets`` stays off the network: ``HF_DATASETS_OFFLINE`` when set, else ``HF_HUB_OFFLINE``."""
    value = os.environ.get("HF_DATASETS_OFFLINE")
    if value is None:
        value = os.environ.get("HF_HUB_OFFLINE", "")
    return value.strip().lower() in _TRUE


def datasets_cache_dir() -> Path:
    """The datasets cache: ``HF_DATASETS_CACHE``, else ``$HF_HOME/datasets``, else ``~/.cache/huggingface/datasets``."""
    if os.environ.get("HF_DATASETS_CACHE"):
        return Path(os.environ["HF_DATASETS_CACHE"]).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME", str(Path("~/.cache")))
    return Path(os.environ.get("HF_HOME", os.path.join(cache_home, "huggingface"))).expanduser() / "datasets"


def cached_configs(dataset_id: str, cache_dir: Path | None = None) -> list[str]:
    """Names of the cache folders of ``dataset_id``'s configs (``default``, ``en``, ``en-<hash>``...), as
    ``load_dataset`` finds them offline; empty when the dataset was never loaded on this machine."""
    *namespace, name = dataset_id.split("/")
    name = _LOWER_UPPER.sub(r"\1_\2", _UPPER_UPPER.sub(r"\1_\2", name)).lower()
    root = (cache_dir or datasets_cache_dir()) / "___".join([*namespace, name])
    return sorted({p.parents[1].name for p in root.glob("*/*/*") if p.is_dir()})


def _has_config(configs: list[str], config: str | None) -> bool:
    return bool(configs) if config is None else any(c == config or c.startswith(f"{config}-") for c in configs)


def _not_cached(dataset_id: str, config: str | None, cache_dir: Path) -> str:
    what = f"dataset {dataset_id!r}" + (f" (config {config!r})" if config else "")
    return (
        f"{what} is not in the local datasets cache ({cache_dir}) and offline mode is on "
        "(HF_DATASETS_OFFLINE / HF_HUB_OFFLINE); load it once online, or use dataset_path for a local folder"
    )


def uses_hub(options: Mapping[str, Any]) -> bool:
    """Whether the data is a Hugging Face dataset: format ``hub``, or ``auto`` without a ``train`` file."""
    return options["format"] == "hub" or (options["format"] == "auto" and not options.get("train"))


def source_problem(options: Mapping[str, Any]) -> tuple[str, str] | None:
    """The option at fault and why, when the data source is missing, ambiguous or not readable in the format;
    ``None`` when exactly one of ``train``, ``dataset`` and ``dataset_path`` is given, in a format that reads it."""
    given = [key for key in ("train", "dataset", "dataset_path") if options.get(key)]
    if len(given) != 1:
        what = "train (a file), dataset (a hub id) or dataset_path (a local dataset folder)"
        return "train", f"give exactly one of {what}" + (f"; got {' and '.join(given)}" if given else "")
    if uses_hub(options) == (given[0] == "train"):
        reads = "dataset or dataset_path, not a train file" if given[0] == "train" else "files; use format hub"
        return "format", f"format {options['format']} reads {reads}"
    return None


def check_hub(options: Mapping[str, Any], where: str) -> list[Problem]:
    """Cheap checks of the hub options at validate time (no ``datasets`` import, no network)."""
    problems: list[Problem] = []
    for key in ("train_labels", "validation", "validation_labels", "test", "test_labels"):
        if options.get(key):
            split = key.split("_")[0]
            problems.append(Problem(f"{where}.{key}", f"a file option; with a dataset use {split}_split instead"))
    if options.get("dataset_path") and not Path(options["dataset_path"]).is_dir():
        problems.append(Problem(f"{where}.dataset_path", f"{options['dataset_path']}: not a folder"))
    names = {split: options[f"{split}_split"] for split in SPLITS}
    for split in SPLITS:
        if not names[split]:
            problems.append(Problem(f"{where}.{split}_split", "must name a split of the dataset"))
    for a, b in (("train", "validation"), ("train", "test"), ("validation", "test")):
        if names[a] and names[a] == names[b]:
            problems.append(Problem(f"{where}.{b}_split", f"names the same split as {a}_split ({names[a]!r})"))
    dataset_id = options.get("dataset")
    if not dataset_id:
        return problems
    if any(dataset_id.startswith(p) for p in ("/", ".", "~", "pkg:")) or dataset_id.count("/") > 1:
        return [*problems, Problem(f"{where}.dataset", f"{dataset_id!r} is a path; use dataset_path for a folder")]
    if not _HUB_ID.fullmatch(dataset_id) or "--" in dataset_id or ".." in dataset_id:
        return [*problems, Problem(f"{where}.dataset", f"{dataset_id!r} is not a hub id (name or namespace/name)")]
    cache_dir = datasets_cache_dir()
    if datasets_offline() and not _has_config(cached_configs(dataset_id, cache_dir), options.get("dataset_config")):
        problems.append(Problem(f"{where}.dataset", _not_cached(dataset_id, options.get("dataset_config"), cache_dir)))
    return problems


def _load(options: Mapping[str, Any]) -> tuple[str, Any]:
    """Load the dataset the options name; return a label for messages and a ``DatasetDict`` (or ``Dataset``)."""
    import datasets

    config, cache_dir = options.get("dataset_config"), datasets_cache_dir()
    loader: Any = datasets.load_dataset
    kwargs: dict[str, Any] = {"name": config, "cache_dir": str(cache_dir)}
    if options.get("dataset_path"):
        folder = Path(options["dataset_path"])
        label = target = str(folder)
        if not folder.is_dir():
            raise HarnessError(f"{folder}: not a folder (dataset_path names a dataset folder)")
        if (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file():  # written by save_to_disk
            loader, kwargs = datasets.load_from_disk, {}
    else:
        label = target = options["dataset"]
        if datasets_offline() and not _has_config(cached_configs(label, cache_dir), config):
            raise HarnessError(_not_cached(label, config, cache_dir))
    try:
        return label, loader(target, **kwargs)
    except ConnectionError as exc:
        if datasets_offline():
            raise HarnessError(_not_cached(label, config, cache_dir)) from None
        raise HarnessError(f"dataset {label!r}: cannot reach the Hugging Face Hub ({exc})") from None
    except (datasets.exceptions.DatasetsError, OSError, ValueError) as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise HarnessError(f"dataset {label!r}: cannot load it: {detail}") from None


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

    names = [options[f"{split}_split"] for split in SPLITS]
    if len(set(names)) < len(names):
        raise HarnessError(f"train_split, validation_split and test_split must differ, got {', '.join(names)}")
    label, loaded = _load(options)
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({"train": loaded})
    available = ", ".join(loaded) or "none"
    out: dict[str, tuple[str, list[_Row]]] = {}
    class_names = None
    for split in SPLITS:
        name = options[f"{split}_split"]
        if name not in loaded:
            if split != "train" and name == split:
                continue  # absent under its default name: carved from train
            raise HarnessError(f"dataset {label!r} has no split {name!r} (splits: {available}); set {split}_split")
        where = f"dataset {label!r} split {name!r}"
        out[split] = (where, _rows(loaded[name], options, where))
        feature = loaded[name].features[options["label_column"]]
        if split == "train" and isinstance(feature, datasets.ClassLabel):
            class_names = tuple(feature.names)
    return out, class_names
