"""``python -m srd.cli``: the ``srd`` command."""

import sys

from srd.cli import main

sys.exit(main())
