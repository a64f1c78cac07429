"""harness: compare tuning strategies for pretrained transformers, with quality, time and memory side by side.

Plugin authors use :mod:`harness.hookspecs` (``hookimpl`` and the hooks) and the base classes in
:mod:`harness.components`; importing this package never imports torch.
"""

__version__ = "0.1.0"
