"""harness-example-plugins: a minimal third-party plugin package for the tuning harness.

It registers, through the entry point ``example`` of the group ``harness`` (module :mod:`harness_example.plugin`):

* the strategy ``bias_tuning`` (:mod:`harness_example.bias_tuning`): BitFit, only bias terms and the task head train;
* the task ``regression`` (:mod:`harness_example.regression`): sentence (pair) to a real number; Pearson, Spearman, MSE;
* the task ``tagging`` (:mod:`harness_example.tagging`): one tag per word (a token-classification head); per-word
  accuracy.

Importing the package imports neither torch nor the harness's plugins.
"""

from __future__ import annotations

__version__ = "0.1.0"
