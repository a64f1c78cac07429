"""harness: compare tuning strategies for pretrained transformers, with quality, time and memory side by side.

The public API for plugin authors lives in :mod:`harness.api`; importing this package never imports torch.
"""

__version__ = "0.1.0"
