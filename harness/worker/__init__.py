"""One cell in its own process: ``python -m harness.worker SPEC`` (:mod:`harness.worker.main`) runs
:func:`harness.worker.cell.run_cell`: the training loop, OOM back-off, measurement, compute and the environment."""

from typing import Any


def __getattr__(name: str) -> Any:  # the names of the API 2 module harness.worker, with a deprecation warning
    from harness._moved import MOVED_NAMES, moved_attribute

    return moved_attribute("worker", MOVED_NAMES["worker"], name)
