"""``python -m vggjax``: the same as the ``vggjax`` command."""

import sys

from vggjax.cli import main

sys.exit(main())
