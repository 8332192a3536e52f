"""Side-by-side benchmark from a checkout; installed, the same command is ``cemg-compare``.

See ``recbole_cemg/cli/compare.py`` (or ``python benchmarks/compare.py --help``) for the options.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout, when not installed
from recbole_cemg.cli.compare import main  # noqa: E402

if __name__ == "__main__":
    main()
