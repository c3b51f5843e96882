"""``python -m punchcard``: the same as the ``punchcard`` command."""

import sys

from punchcard.cli import main

sys.exit(main())
