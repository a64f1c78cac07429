"""What a cell leaves behind: the record schema (:mod:`harness.results.records`) and the results folder with its
per-cell files, locks and resume rules (:mod:`harness.results.store`). The bottom layer: standard library only."""
