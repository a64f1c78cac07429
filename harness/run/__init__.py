"""Running a suite in the main process: the runner (:mod:`harness.run.runner`), what executors share
(:mod:`harness.run.suiterun`: claims, specs, attempts, makespan), devices, memory estimates, the GPU scheduler and
the progress display. Cells themselves run in worker processes (:mod:`harness.worker`)."""
