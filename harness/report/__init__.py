"""From records to papers: rows read from a results folder (:mod:`~harness.report.rows`), aggregation and tests
(:mod:`~harness.report.analysis`, :mod:`~harness.report.stats`), the report object reporters render
(:mod:`~harness.report.reporting`), shared table texts (:mod:`~harness.report.tables`), plots and ``harness
compare``. Never imports torch."""

from typing import Any


def __getattr__(name: str) -> Any:  # the names of the API 2 module harness.report, with a deprecation warning
    from harness._moved import MOVED_NAMES, moved_attribute

    return moved_attribute("report", MOVED_NAMES["report"], name)
