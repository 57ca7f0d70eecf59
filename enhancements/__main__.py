"""``python -m enhancements fit data.csv --target y`` and ``python -m enhancements show RUN_DIR``
(see `enhancements.cli`)."""
import sys

from enhancements.cli import main

sys.exit(main())
