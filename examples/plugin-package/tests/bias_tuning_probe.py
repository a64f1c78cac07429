"""A test-only plugin: the bias_tuning strategy (BitFit), saving every parameter before and after training, to see
what training changed.

``Strategy.stored_bytes`` is called after ``apply`` and again after training (docs/components.md): the probe saves
the parameters there (``params-0.pt``, then ``params-1.pt`` in the cell's folder) and keeps the default bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.api.hookspecs import hookimpl

from harness_example.bias_tuning import BiasTuning


class BiasTuningProbe(BiasTuning):
    name = "bias_tuning_probe"
    description = "bias tuning, saving the parameters before and after training (tests)"

    def apply(self, model: Any, run: Any, options: Any, ctx: Any) -> Any:
        self._out: Path = ctx.out_dir
        self._saved = 0
        return super().apply(model, run, options, ctx)

    def stored_bytes(self, model: Any) -> int | None:
        import torch

        params = {name: param.detach().cpu().clone() for name, param in model.named_parameters()}
        trainable = sorted(name for name, param in model.named_parameters() if param.requires_grad)
        torch.save({"params": params, "trainable": trainable}, self._out / f"params-{self._saved}.pt")
        self._saved += 1
        return None


@hookimpl
def harness_register_strategies(register: Any) -> None:
    register(BiasTuningProbe())
