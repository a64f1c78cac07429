"""Hugging Face datasets for the task data layers: offline detection, cache look-ups and loading with one-line
errors; light: ``datasets`` is imported only inside the loading functions, never at validate time.

Two option layouts use it. Classification and NER name the data with exactly one of ``train`` (a file), ``dataset``
(a hub id) or ``dataset_path`` (a local dataset folder): :func:`uses_hub`, :func:`source_problem`,
:func:`check_hub`, :func:`hub_splits`. Text-pair tasks give ``dataset`` (a hub id or a folder) and load each split
by name: :func:`load_hub_split`, :func:`dataset_cached`.

When offline (``HF_DATASETS_OFFLINE`` / ``HF_HUB_OFFLINE``) a hub id whose folder is not in the datasets cache fails
at once with a message saying so, instead of after the library's network retries.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.errors import HarnessError, Problem
from harness.tasklib.datafiles import SPLITS

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


def is_cached(dataset_id: str, config: str | None = None, cache_dir: Path | None = None) -> bool:
    """Whether ``load_dataset`` finds ``dataset_id`` (with ``config``, or any config when ``None``) offline."""
    configs = cached_configs(dataset_id, cache_dir)
    return bool(configs) if config is None else any(c == config or c.startswith(f"{config}-") for c in configs)


def not_cached_message(dataset_id: str, config: str | None, cache_dir: Path) -> str:
    """Why an offline load of ``dataset_id`` cannot work, and what to do."""
    what = f"dataset {dataset_id!r}" + (f" (config {config!r})" if config else "")
    return (
        f"{what} is not in the local datasets cache ({cache_dir}) and offline mode is on "
        "(HF_DATASETS_OFFLINE / HF_HUB_OFFLINE); load it once online, or use dataset_path for a local folder"
    )


def dataset_cached(dataset: str) -> bool:
    """Whether ``dataset`` is a local folder or sits in the Hugging Face hub cache or the datasets cache."""
    from huggingface_hub import constants

    if Path(dataset).expanduser().is_dir():
        return True
    if (Path(constants.HF_HUB_CACHE) / f"datasets--{dataset.replace('/', '--')}").is_dir():
        return True
    cache_dir = datasets_cache_dir()
    return (cache_dir / dataset.replace("/", "___")).is_dir() or is_cached(dataset, None, cache_dir)


# -- the train / dataset / dataset_path layout (classification, NER) ------------------------------------------------
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
    cache_dir, config = datasets_cache_dir(), options.get("dataset_config")
    if datasets_offline() and not is_cached(dataset_id, config, cache_dir):
        problems.append(Problem(f"{where}.dataset", not_cached_message(dataset_id, config, cache_dir)))
    return problems


def open_dataset(options: Mapping[str, Any]) -> tuple[str, Any]:
    """Load the dataset ``dataset`` / ``dataset_path`` (with ``dataset_config``) name; return a label for messages and
    a ``DatasetDict`` (or ``Dataset``). Raises :class:`HarnessError`, at once when offline and not cached."""
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
        if datasets_offline() and not is_cached(label, config, cache_dir):
            raise HarnessError(not_cached_message(label, config, cache_dir))
    try:
        return label, loader(target, **kwargs)
    except ConnectionError as exc:
        if datasets_offline():
            raise HarnessError(not_cached_message(label, config, cache_dir)) from None
        raise HarnessError(f"dataset {label!r}: cannot reach the Hugging Face Hub ({exc})") from None
    except (datasets.exceptions.DatasetsError, OSError, ValueError) as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise HarnessError(f"dataset {label!r}: cannot load it: {detail}") from None


def hub_splits(options: Mapping[str, Any]) -> tuple[str, dict[str, tuple[str, Any]]]:
    """The dataset's label for messages and ``split -> (where, Dataset)`` for the splits ``<split>_split`` name; a
    validation or test split missing under its default name is left out (to be carved from train), any other missing
    split is an error listing the dataset's splits. A single ``Dataset`` counts as the train split."""
    import datasets

    names = [options[f"{split}_split"] for split in SPLITS]
    if len(set(names)) < len(names):
        raise HarnessError(f"train_split, validation_split and test_split must differ, got {', '.join(names)}")
    label, loaded = open_dataset(options)
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({"train": loaded})
    found: dict[str, tuple[str, Any]] = {}
    for split, name in zip(SPLITS, names, strict=True):
        if name not in loaded:
            if split != "train" and name == split:
                continue  # absent under its default name: carved from train
            available = ", ".join(loaded) or "none"
            raise HarnessError(f"dataset {label!r} has no split {name!r} (splits: {available}); set {split}_split")
        found[split] = (f"dataset {label!r} split {name!r}", loaded[name])
    return label, found


# -- the dataset + split names layout (text pairs) ------------------------------------------------------------------
def load_hub_split(dataset: str, config: str | None, split: str) -> list[tuple[str, Mapping[str, Any]]]:
    """``(place, row)`` for every row of a hub dataset split (``dataset`` a hub id or a folder); any loading failure is
    one clear line, at once when offline and the hub id is not cached."""
    named = f"{dataset!r}" + (f" (config {config!r})" if config else "")
    if datasets_offline() and not dataset_cached(dataset):
        raise HarnessError(
            f"dataset {named}: cannot load split {split!r}: not in the local Hugging Face cache and offline mode is "
            "on (HF_DATASETS_OFFLINE / HF_HUB_OFFLINE); load it once online, or give a local folder or files"
        )
    try:
        from datasets import load_dataset

        rows = load_dataset(dataset, config, split=split)
    except Exception as exc:  # offline, unknown id or split, a broken script: say which and why
        raise HarnessError(f"dataset {named}: cannot load split {split!r}: {type(exc).__name__}: {exc}") from None
    return [(f"{dataset}[{split}] row {i}", row) for i, row in enumerate(rows)]
