"""``python -m harness.worker SPEC``: run one cell (:func:`harness.worker.main.main`)."""

import sys

from harness.worker.main import main

sys.exit(main())
