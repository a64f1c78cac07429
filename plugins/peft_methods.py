"""The methods the installed peft offers, for the ``peft`` strategy (``method = "vera"``), read from peft's source
with :mod:`ast` — never imported, so ``harness plugins`` and ``harness validate`` stay free of torch.

Every tuner package of peft registers itself in its ``__init__.py`` with ``register_peft_method(name=...,
config_cls=...)``; :func:`installed_methods` reads those calls, follows the imports to the config class and its base
classes (:class:`PeftMethod.chain`, what :func:`harness_plugins.peft_fields.peft_fields` reads the fields of).
A method is named by peft's registered name or its ``PeftType`` (``"vera"``, ``"VERA"``, ``"ln_tuning"``: case does not
matter); ``dora`` is LoRA with ``use_dora = true``.

:data:`LEARNING_RATES` are the per-method default learning rates with their sources; :data:`REFUSED` the methods the
harness cannot train, and why.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.tasklib.datacheck import cache_root

from .peft_fields import peft_root

#: Methods named after a peft method with fixed config values.
ALIASES: dict[str, tuple[str, dict[str, Any]]] = {"dora": ("lora", {"use_dora": True})}

#: What the harness gives prompt-learning methods unless the ``peft`` table says otherwise (peft has no default
#: number of virtual tokens): the named strategies' (``prompt_tuning``, ``p_tuning``, ``prefix_tuning``).
PROMPT_DEFAULTS: dict[str, Any] = {"num_virtual_tokens": 20}

#: Methods the harness cannot train, and why (the suite gets the reason as a problem at validate time).
REFUSED = {
    "xlora": "X-LoRA mixes LoRA adapters trained beforehand (named in its config); a cell trains one adapter",
    "poly": "Poly routes by task ids given with every batch (multi-task training); harness tasks give none",
    "multitask_prompt_tuning": "it needs task ids with every batch (multi-task training); harness tasks give none",
    "cpt": "CPT builds its prompt from token ids and masks of example demonstrations set in its config and trains "
    "with its own loss; harness tasks give neither",
}

#: LoRA's rate (the ``lora`` strategy: the LoRA paper's RoBERTa-base GLUE rate): the default of a method without one
#: below. peft's MetaMathQA method comparison trains most methods at LoRA's rate (1e-4 on Llama-3.2-3B).
LORA_RATE = 5e-4

#: Default learning rate of a method, and where it comes from ("peft comparison": peft's
#: method_comparison/MetaMathQA results on Llama-3.2-3B, where LoRA runs at 1e-4).
LEARNING_RATES: dict[str, tuple[float, str]] = {
    "lora": (LORA_RATE, "LoRA paper, RoBERTa-base GLUE (the lora strategy's rate)"),
    "dora": (LORA_RATE, "LoRA's rate: DoRA is LoRA plus a magnitude vector, so the two compare at one rate"),
    "adalora": (1e-3, "peft example peft_adalora_seq2seq.py (the adalora strategy's rate)"),
    "ia3": (3e-3, "T-Few paper (the ia3 strategy's rate)"),
    "prompt_tuning": (3e-2, "peft example peft_prompt_tuning_clm.ipynb (the prompt_tuning strategy's rate)"),
    "prefix_tuning": (1e-2, "peft example peft_prefix_tuning_seq2seq.ipynb (the prefix_tuning strategy's rate)"),
    "p_tuning": (1e-3, "peft example P_Tuning.ipynb (the p_tuning strategy's rate)"),
    "vera": (
        5e-3,
        "10x LoRA's, as in the peft comparison (VeRA 1e-3, LoRA 1e-4); VeRA's GLUE configurations for RoBERTa-base "
        "train the vectors at 2e-3..2e-2 (the head apart)",
    ),
    "fourierft": (
        6e-2,
        "peft example sequence_classification/FourierFT.ipynb, RoBERTa-base MRPC (spectral "
        "coefficients; the head there trains at 6e-3)",
    ),
    "loha": (LORA_RATE, "LoRA's: the peft comparison trains LoHa at LoRA's rate"),
    "lokr": (LORA_RATE, "LoRA's, as LoHa, its LyCORIS sibling"),
    "oft": (LORA_RATE, "LoRA's: the peft comparison trains OFT at LoRA's rate"),
    "boft": (LORA_RATE, "LoRA's: the peft comparison trains BOFT at LoRA's rate"),
    "ln_tuning": (
        1e-3,
        "BitFit's rate, for the same kind of parameters (a few vectors a layer); at LoRA's rate "
        "the peft comparison's LN tuning learned nothing (0 % on GSM8K)",
    ),
}


@dataclass(frozen=True)
class PeftMethod:
    """A method of the installed peft: its registered name, its config class and where the fields of that class and
    its bases are declared (``(file inside peft, class)``, base classes first)."""

    name: str
    config_class: str
    chain: tuple[tuple[str, str], ...]

    @property
    def prompt_learning(self) -> bool:
        """Whether it is one of peft's prompt-learning methods (virtual tokens, prefixes)."""
        return any(cls == "PromptLearningConfig" for _, cls in self.chain)


def _module_file(root: Path, module: str) -> Path | None:
    """The source file of ``peft.x.y`` (``x/y.py`` or ``x/y/__init__.py``)."""
    parts = module.split(".")[1:]
    base = root.joinpath(*parts) if parts else root
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_from(root: Path, path: Path, node: ast.ImportFrom) -> Path | None:
    """The file an ``from ... import`` statement of ``path`` reads (absolute ``peft.*`` or relative)."""
    if node.level:
        package = path.parent
        for _ in range(node.level - 1):
            package = package.parent
        dotted = ".".join(("peft", *package.relative_to(root).parts, *(node.module or "").split(".")))
        return _module_file(root, dotted.rstrip("."))
    if node.module and (node.module == "peft" or node.module.startswith("peft.")):
        return _module_file(root, node.module)
    return None


@functools.lru_cache(maxsize=None)
def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def _find_class(root: Path, path: Path, name: str, depth: int = 0) -> tuple[Path, ast.ClassDef] | None:
    """Where class ``name``, as seen from ``path``, is defined: in the file, or in the file it is imported from."""
    if depth > 4:
        return None
    tree = _parse(path)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return path, node
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == name for a in node.names):
            source = _imported_from(root, path, node)
            if source is not None:
                real = next(a.name for a in node.names if (a.asname or a.name) == name)
                return _find_class(root, source, real, depth + 1)
    return None


def _chain(root: Path, path: Path, name: str) -> tuple[tuple[str, str], ...]:
    """``(file, class)`` of class ``name`` and its base classes within peft, base classes first."""
    found = _find_class(root, path, name)
    if found is None:
        return ()
    where, node = found
    bases: tuple[tuple[str, str], ...] = ()
    for base in node.bases:
        if isinstance(base, ast.Name):
            bases += _chain(root, where, base.id)
    return (*bases, (where.relative_to(root).as_posix(), node.name))


def _registrations(tree: ast.Module) -> list[tuple[str, str]]:
    """``(name, config class)`` of the ``register_peft_method`` calls of a tuner's ``__init__.py``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "register_peft_method":
            args = {k.arg: k.value for k in node.keywords}
            name, config = args.get("name"), args.get("config_cls")
            if isinstance(name, ast.Constant) and isinstance(name.value, str) and isinstance(config, ast.Name):
                found.append((name.value, config.id))
    return found


@functools.lru_cache(maxsize=None)
def installed_methods() -> dict[str, PeftMethod] | None:
    """The installed peft's methods by registered name, or ``None`` when peft or its layout cannot be read (the
    method is then resolved in the worker). Reading peft's sources takes about 0.4 s, so the result is kept in the
    harness cache folder (``peft-methods/``), keyed by peft's version, folder and the modification times of its
    tuner folders: ``harness plugins`` and ``validate`` read it back in milliseconds."""
    root = peft_root()
    if root is None:
        return None
    cache = _cache_file(root)
    if cache is not None:
        try:
            data = json.loads(cache.read_text(encoding="utf-8"))
            return {name: PeftMethod(name, config, tuple(tuple(link) for link in chain))  # type: ignore[misc]
                    for name, (config, chain) in data.items()} or None  # fmt: skip
        except (OSError, ValueError, TypeError):
            pass
    methods = _read_methods(root)
    if methods and cache is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=cache.parent, delete=False, suffix=".tmp", encoding="utf-8") as fh:
                json.dump({m.name: [m.config_class, [list(link) for link in m.chain]] for m in methods.values()}, fh)
            os.replace(fh.name, cache)
        except OSError:
            pass  # a read-only cache only costs time
    return methods


def _cache_file(root: Path) -> Path | None:
    try:
        version = importlib.metadata.version("peft")
        stamps = [p.stat().st_mtime_ns for p in sorted((root / "tuners").iterdir())]
    except (importlib.metadata.PackageNotFoundError, OSError):
        return None
    blob = json.dumps([version, str(root), stamps, CACHE_FORMAT])
    return cache_root() / "peft-methods" / f"{hashlib.sha256(blob.encode()).hexdigest()[:32]}.json"


#: Bumped when what :func:`installed_methods` reads changes (older cache entries are then ignored).
CACHE_FORMAT = 1


def _read_methods(root: Path) -> dict[str, PeftMethod] | None:
    methods = {}
    try:
        for init in sorted((root / "tuners").glob("*/__init__.py")):
            for name, config in _registrations(_parse(init)):
                chain = _chain(root, init, config)
                if chain:
                    methods[name] = PeftMethod(name, config, chain)
    except (OSError, SyntaxError, ValueError):
        return None
    return methods or None


def method_key(method: str) -> str:
    """A method name as peft registers it: ``"LN_TUNING"`` and ``"ln-tuning"`` are ``"ln_tuning"``."""
    return method.strip().lower().replace("-", "_")


def resolve(method: str) -> tuple[PeftMethod | None, dict[str, Any]]:
    """The installed method ``method`` names (``None`` when unknown or peft unreadable) and the config values the
    name fixes (``dora``: ``use_dora = true``)."""
    key = method_key(method)
    real, fixed = ALIASES.get(key, (key, {}))
    methods = installed_methods() or {}
    return methods.get(real), dict(fixed)


def available() -> list[str]:
    """Method names a suite may give: the installed peft's, its aliases, and none that is refused."""
    methods = installed_methods() or {}
    names = [n for n in methods if n not in REFUSED]
    return sorted(names + [a for a, (real, _) in ALIASES.items() if real in methods])


def learning_rate(method: str) -> tuple[float, str]:
    """The default learning rate of ``method`` and its source (LoRA's rate for a method without one)."""
    return LEARNING_RATES.get(method_key(method), (LORA_RATE, "LoRA's rate: no method-specific source"))


def fixed_conflicts(fixed: Mapping[str, Any], table: Mapping[str, Any]) -> list[str]:
    """Keys of the ``peft`` table that contradict what the method's name fixes (``dora`` with ``use_dora = false``)."""
    return [key for key, value in fixed.items() if key in table and table[key] != value]


def worker_config(method: str, table: Mapping[str, Any], where: str) -> tuple[str, dict[str, Any]]:
    """In the worker (imports peft): the name of the config class of ``method`` in the installed peft, and the fields
    to give it: :data:`PROMPT_DEFAULTS` for a prompt-learning method, the suite's ``peft`` table over them, and the
    values the method's name fixes. A one-line :class:`HarnessError` for a method unknown or refused."""
    from peft import PromptLearningConfig
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    key = method_key(method)
    real, fixed = ALIASES.get(key, (key, {}))
    if real in REFUSED:
        raise HarnessError(f"{where}.method: the harness cannot train peft's {real}: {REFUSED[real]}")
    classes = {str(getattr(t, "value", t)).lower(): cls for t, cls in PEFT_TYPE_TO_CONFIG_MAPPING.items()}
    if real not in classes:
        raise HarnessError(f"{where}.method: unknown peft method {method!r}; peft offers {', '.join(sorted(classes))}")
    defaults = PROMPT_DEFAULTS if issubclass(classes[real], PromptLearningConfig) else {}
    return classes[real].__name__, {**defaults, **table, **fixed}
