"""The ``qlora`` strategy: LoRA on a 4-bit base (QLoRA, Dettmers et al. 2023) through bitsandbytes.

The base model's linear layers load in 4 bits (bitsandbytes ``Linear4bit``: NF4 with double quantisation by default),
frozen, and LoRA's low-rank updates train on top as ``lora`` trains them: the same options and defaults, the same
adapted modules, trainable parameters (4·L·r·H on BERT's query and value) and stored adapter bytes. Only the memory
of the frozen base differs (about a quarter of float16's, an eighth of float32's, for the quantised layers).

Loading. :meth:`QLora.load_options` asks the model source for ``quantization_config = BitsAndBytesConfig(...)``
(:meth:`harness.api.components.Strategy.load_options`); the built-in sources pass it to ``from_pretrained``. The task
head (``run.head_prefixes``), ``lm_head`` and ``skip_modules`` stay unquantised: the head is new and trains beside the
adapter, and a decoder's output layer is usually tied to its input embeddings. :meth:`QLora.apply` runs peft's
``prepare_model_for_kbit_training`` (everything frozen; weights outside the 4-bit layers loaded in 16 bits upcast to
float32) and then wraps the model in LoRA exactly as ``lora`` does. Gradient checkpointing follows
``budget.gradient_checkpointing`` as for every strategy (the QLoRA paper used it; peft's helper would turn it on).

Support. bitsandbytes is an optional extra (``pip install 'tuning-harness[qlora]'``) whose 4-bit kernels need a CUDA
GPU here. Planning happens in the main process, which never imports torch, so :func:`unavailable` decides without it:
no bitsandbytes (``importlib.util.find_spec``), or no CUDA GPU visible to the planning process —
``CUDA_VISIBLE_DEVICES`` set to ``""`` or ``-1``, else NVML's device count (``nvidia-ml-py``, a harness dependency on
Linux), else (no NVML binding) ``nvidia-smi`` on the ``PATH`` — plans the cells as skipped with that reason. The
machine that plans decides: a Ray driver without a GPU plans qlora cells as skipped even when the cluster has GPUs. The
worker checks again before the model loads: a cell run on the CPU anyway (``harness run --devices cpu`` on a GPU
machine) fails with one line.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

from harness.api.components import CellContext, Task, TaskRun
from harness.api.hookspecs import hookimpl
from harness.api.options import Option
from harness.errors import HarnessError

from .peft_strategies import Lora

#: What a user installs for the strategy.
INSTALL = "pip install 'tuning-harness[qlora]'"
#: Modules never quantised besides the task head: a decoder's output layer (often tied to the input embeddings).
UNQUANTISED = ("lm_head",)
QUANT_OPTIONS = (
    Option(
        "bnb_4bit_quant_type", "str", "nf4", "4-bit data type of the base weights (nf4: the QLoRA paper's NormalFloat)",
        choices=("nf4", "fp4"),
    ),
    Option(
        "bnb_4bit_use_double_quant", "bool", True,
        "quantise the quantisation constants too (about 0.37 bits a weight saved)",
    ),
    Option(
        "bnb_4bit_compute_dtype", "str", "bfloat16",
        "dtype the 4-bit layers compute in (float16 on GPUs without bfloat16)",
        choices=("bfloat16", "float16", "float32"),
    ),
    Option(
        "skip_modules", "list[str]", None,
        "further module names left unquantised (bitsandbytes' llm_int8_skip_modules), beside the task head and lm_head",
    ),
)  # fmt: skip
QUANT_NAMES = frozenset(o.name for o in QUANT_OPTIONS)


def _nvml_gpus() -> int | None:
    """GPUs NVML sees (0 without a driver), or ``None`` without the ``pynvml`` binding."""
    try:
        import pynvml  # nvidia-ml-py: ctypes, no torch
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # no driver, no library: no usable GPU
        return 0
    try:
        return int(pynvml.nvmlDeviceGetCount())
    except Exception:
        return 0
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


@functools.lru_cache(maxsize=1)
def _machine_has_gpu() -> bool:
    gpus = _nvml_gpus()
    return shutil.which("nvidia-smi") is not None if gpus is None else gpus > 0


def cuda_visible() -> bool:
    """Whether this process would see a CUDA GPU, found without torch (see the module docs)."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is not None and value.split(",")[0].strip() in ("", "-1"):
        return False
    return _machine_has_gpu()


def bitsandbytes_installed() -> bool:
    """Whether bitsandbytes is installed (found, not imported)."""
    return importlib.util.find_spec("bitsandbytes") is not None


def unavailable() -> str | None:
    """Why qlora cannot run on this machine (no CUDA GPU, no bitsandbytes), or ``None``; never imports torch."""
    if not cuda_visible():
        return "qlora needs a CUDA GPU (bitsandbytes 4-bit kernels); none is visible here"
    if not bitsandbytes_installed():
        return f"qlora needs bitsandbytes ({INSTALL})"
    return None


def quantization_kwargs(options: Mapping[str, Any], keep: Sequence[str] = ()) -> dict[str, Any]:
    """``BitsAndBytesConfig`` arguments of the strategy's resolved ``options``; ``keep``: module names left
    unquantised besides :data:`UNQUANTISED` and ``skip_modules`` (the task head)."""
    skip = {name.rstrip(".") for name in (*keep, *UNQUANTISED, *(options.get("skip_modules") or ()))}
    return {
        "load_in_4bit": True,
        "bnb_4bit_quant_type": options["bnb_4bit_quant_type"],
        "bnb_4bit_use_double_quant": options["bnb_4bit_use_double_quant"],
        "bnb_4bit_compute_dtype": options["bnb_4bit_compute_dtype"],
        "llm_int8_skip_modules": sorted(skip),
    }


class QLora(Lora):
    """QLoRA (Dettmers et al. 2023): LoRA on a frozen base whose linear layers are stored in 4 bits (NF4, double
    quantisation, bfloat16 compute: the paper's setting), through bitsandbytes; CUDA only (see the module docs).

    LoRA's options, defaults and budget, learning rate 5e-4 included, so that a suite comparing the two changes only
    the base's precision (the QLoRA paper trained 7B-13B models at 2e-4: set ``[strategies.qlora.budget]``
    ``learning_rate`` to follow it; 1e-4 for 33B-65B, the authors' scripts/finetune_guanaco_*.sh)."""

    name = "qlora"
    description = "QLoRA (peft + bitsandbytes): LoRA on a 4-bit NF4 base; needs a CUDA GPU and the qlora extra"
    options = (*Lora.options[:-1], *QUANT_OPTIONS, Lora.options[-1])

    def supports(self, task: Task, family: str) -> str | None:
        return super().supports(task, family) or unavailable()

    def load_options(self, run: TaskRun, options: Mapping[str, Any], ctx: CellContext) -> Mapping[str, Any]:
        where = f"strategies.{ctx.cell.strategy}"
        if not ctx.device.startswith("cuda"):
            raise HarnessError(
                f"{where}: qlora needs a CUDA GPU (bitsandbytes 4-bit kernels); this cell runs on {ctx.device}"
            )
        if not bitsandbytes_installed():
            raise HarnessError(f"{where}: qlora needs bitsandbytes ({INSTALL})")
        from transformers import BitsAndBytesConfig

        return {"quantization_config": BitsAndBytesConfig(**quantization_kwargs(options, run.head_prefixes))}

    def apply(self, model: Any, run: TaskRun, options: Mapping[str, Any], ctx: CellContext) -> Any:
        from peft import prepare_model_for_kbit_training

        if not getattr(model, "is_loaded_in_4bit", False):
            raise HarnessError(
                f"strategies.{ctx.cell.strategy}: the model was not loaded in 4 bits (model source "
                f"{ctx.cell.model_source!r} did not apply the quantization_config qlora asked for)"
            )
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        lora = {k: v for k, v in options.items() if k not in QUANT_NAMES}
        return super().apply(model, run, lora, ctx)


@hookimpl
def harness_register_strategies(register: Any) -> None:
    register(QLora())
