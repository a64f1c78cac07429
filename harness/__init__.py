"""harness: compare tuning strategies for pretrained transformers, with quality, time and memory side by side.

Plugin authors use :mod:`harness.api.hookspecs` (``hookimpl`` and the hooks) and the base classes in
:mod:`harness.api.components`; importing this package never imports torch.
"""

__version__ = "0.1.0"

from harness import _moved

_moved.install()  # API 2 module names (harness.components, harness.plan, ...) keep working, with a warning
