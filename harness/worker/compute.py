"""Compute and energy of a cell: training FLOPs, model FLOPs utilisation (MFU), GPU energy from NVML.

**Training FLOPs** (:func:`training_flops`) follow the usual transformer accounting (Kaplan et al. 2020, "Scaling
Laws for Neural Language Models", C ≈ 6·N·T; the same rule behind MFU in Chowdhery et al. 2022, PaLM, appendix B):
a forward pass costs 2 FLOPs per matmul weight per token, the backward pass 4 (2 for the gradient with respect to
the activations, 2 for the gradient of the weights). With frozen weights (adapters, prompt tuning) the activation
gradient still flows through every layer, but no weight gradient is computed for frozen weights, so

    FLOPs = (4·N + 2·N_trainable) · T        (full fine-tuning: N_trainable = N, i.e. 6·N·T)

where N counts the weights of the model's matrix multiplications (``torch.nn.Linear`` and GPT-2's ``Conv1D``
layers, the output head included; embedding look-ups cost no multiply-adds), N_trainable the trainable ones among
them plus every other trainable weight (adapter vectors, soft prompts), and T the training tokens processed
(non-padding, :class:`harness.results.records.Training` ``tokens``). The attention scores (2·2·L·s·d per token per layer) are
left out, as in the 6·N·T rule; for short sequences they are a few percent. A lower bound on the real work.

**MFU** (:func:`mfu`) = training FLOPs / (training seconds × the device's peak dense FLOP/s for the dtype the model
multiplied in — the autocast dtype with mixed precision, else the weights' (:func:`matmul_dtype`): :data:`PEAK_TFLOPS`,
the vendors' data-sheet figures without sparsity). ``None`` on a CPU, or on a GPU
the table does not know.

**Energy** (:class:`EnergyMeter`): NVML's total-energy counter of the cell's GPU (millijoules since the driver was
loaded, Volta and newer; ``nvmlDeviceGetTotalEnergyConsumption``) read at the start and the end of a phase; the
difference in joules. The GPU is found by the UUID torch reports for the visible device, so the right board is
read whatever ``CUDA_VISIBLE_DEVICES`` pins. The counter is the whole board's: when several cells share a GPU
(``max_cells_per_gpu`` > 1), each cell's figure includes the others' draw. ``None`` without NVML (the
``nvidia-ml-py`` package and a driver), or on GPUs without the counter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: Peak dense tensor FLOP/s in TFLOP/s by GPU (substring of the CUDA device name, most specific first) and the
#: dtype the model's matmuls ran in (:func:`matmul_dtype`): ``"bf16"`` (also fp16), ``"fp32"`` (CUDA cores; TF32 tensor cores are
#: not used by torch for fp32 matmuls unless allowed). NVIDIA data sheets, without structured sparsity.
PEAK_TFLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H200", {"bf16": 989.4, "fp32": 66.9}),
    ("H100 PCIe", {"bf16": 756.5, "fp32": 51.2}),
    ("H100 NVL", {"bf16": 835.5, "fp32": 60.0}),
    ("H100", {"bf16": 989.4, "fp32": 66.9}),  # SXM5
    ("GH200", {"bf16": 989.4, "fp32": 66.9}),
    ("A100", {"bf16": 312.0, "fp32": 19.5}),
    ("A10G", {"bf16": 70.0, "fp32": 31.2}),
    ("A10", {"bf16": 125.0, "fp32": 31.2}),
    ("L40S", {"bf16": 362.05, "fp32": 91.6}),
    ("L4", {"bf16": 121.0, "fp32": 30.3}),
    ("V100", {"bf16": 125.0, "fp32": 15.7}),  # fp16 tensor cores (V100 has no bf16)
    ("T4", {"bf16": 65.0, "fp32": 8.1}),  # fp16
    ("RTX 4090", {"bf16": 165.2, "fp32": 82.6}),
)


def peak_flops(device_name: str | None, dtype: str) -> float | None:
    """Peak FLOP/s of ``device_name`` (a CUDA device name) for matmuls in ``dtype`` (``"float32"``, ``"bfloat16"``,
    ``"float16"``, or the torch dtype's ``str``); ``None`` when unknown."""
    if not device_name:
        return None
    kind = "fp32" if "32" in dtype else "bf16" if ("16" in dtype) else None
    if kind is None:
        return None
    for name, peaks in PEAK_TFLOPS:
        if name.lower() in device_name.lower():
            return peaks[kind] * 1e12
    return None


def logical_numel(param: Any) -> int:
    """The number of weights a parameter stands for: ``numel()``, except for bitsandbytes' 4-bit ``Params4bit``,
    which packs two weights into each byte of its storage (``quant_storage``), as peft counts them."""
    n = int(param.numel())
    if type(param).__name__ == "Params4bit":
        itemsize = getattr(getattr(param, "quant_storage", None), "itemsize", None) or param.element_size()
        n *= 2 * int(itemsize)
    return n


def matmul_parameters(model: Any) -> tuple[int, int]:
    """(N, N_trainable) of :func:`training_flops` for a torch model: the weights of its ``Linear`` and ``Conv1D``
    layers, and the trainable weights among them plus every other trainable parameter."""
    import torch

    seen: set[int] = set()
    total = trainable = 0
    for module in model.modules():
        if not (isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D"):
            continue
        weight = getattr(module, "weight", None)
        if weight is None or id(weight) in seen:
            continue
        seen.add(id(weight))
        total += logical_numel(weight)
        trainable += logical_numel(weight) if weight.requires_grad else 0
    for parameter in model.parameters():
        if parameter.requires_grad and id(parameter) not in seen:
            trainable += parameter.numel()
            seen.add(id(parameter))
    return total, trainable


def matmul_dtype(model: Any, autocast: str | None = None) -> str:
    """What the model's multiplications run in (``str`` of a torch dtype): under ``torch.autocast`` its dtype
    (``autocast``, e.g. ``"torch.bfloat16"``: autocast runs every ``Linear`` and matmul in it whatever the weights'
    dtype), else the dtype holding most of the model's matmul weights, whatever the adapters' own dtype (peft keeps
    adapters of a bf16 model in float32)."""
    if autocast is not None:
        return autocast
    return weight_dtype(model)


def weight_dtype(model: Any) -> str:
    """The dtype holding most of the model's matmul weights (``str`` of a torch dtype)."""
    import torch

    counts: dict[str, int] = {}
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if weight is not None and (isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D"):
            counts[str(weight.dtype)] = counts.get(str(weight.dtype), 0) + weight.numel()
    return max(counts, key=counts.__getitem__) if counts else "torch.float32"


def training_flops(n: int, n_trainable: int, tokens: int) -> float:
    """``(4·N + 2·N_trainable) · T``: see the module's rule."""
    return float(4 * n + 2 * n_trainable) * tokens


def mfu(flops: float | None, seconds: float | None, peak: float | None) -> float | None:
    """Model FLOPs utilisation, a fraction: ``flops / (seconds · peak)``; ``None`` when a figure is missing."""
    if not flops or not seconds or not peak:
        return None
    return flops / (seconds * peak)


class EnergyMeter:
    """Joules used by the cell's GPU between :meth:`start` and :meth:`stop` (see the module's notes).

    :param nvml: the ``pynvml`` module (tests pass a fake); imported when ``None``.
    :param uuid: the GPU's UUID (``"GPU-…"``); found through torch for device 0 when ``None``.
    """

    def __init__(self, nvml: Any | None = None, uuid: str | None = None) -> None:
        self.available = False
        self.reason: str | None = None
        self._start_mj: int | None = None
        try:
            if nvml is None:
                import pynvml as nvml  # nvidia-ml-py
            nvml.nvmlInit()
            self._nvml = nvml
            self._handle = nvml.nvmlDeviceGetHandleByUUID(uuid or _torch_uuid())
            nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
            self.available = True
        except Exception as exc:  # no package, no driver, no counter on this GPU: no energy figure
            self.reason = f"{type(exc).__name__}: {exc}"

    def _read(self) -> int | None:
        if not self.available:
            return None
        try:
            return int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))
        except Exception as exc:
            self.available, self.reason = False, f"{type(exc).__name__}: {exc}"
            return None

    def start(self) -> None:
        self._start_mj = self._read()

    def stop(self) -> float | None:
        """Joules since :meth:`start` (``None`` without the counter)."""
        end = self._read()
        if end is None or self._start_mj is None:
            return None
        return (end - self._start_mj) / 1000.0


def _torch_uuid() -> str:
    import torch

    uuid = str(torch.cuda.get_device_properties(0).uuid)
    return uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"


#: Factory of the energy meter a cell uses (tests replace it).
energy_meter: Callable[[], EnergyMeter] = EnergyMeter
