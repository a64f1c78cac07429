"""What task plugins share: data files and splits (:mod:`~harness.tasklib.datafiles`, :mod:`~harness.tasklib.datahub`,
:mod:`~harness.tasklib.datacheck`), source/reference pairs and their checks (:mod:`~harness.tasklib.textpairs`,
:mod:`~harness.tasklib.paircheck`), text-to-text runs (:mod:`~harness.tasklib.text2text`), in-context demonstrations,
prompts, generation and batching."""
