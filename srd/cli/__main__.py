"""``python -m srd.cli``: the tests run srd this way, as the installed ``srd`` script does."""

import sys

from srd.cli import main

sys.exit(main())
