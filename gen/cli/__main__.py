"""``python -m exion.gen.cli``: the same as the ``exion`` command."""

import sys

from exion.gen.cli import main

sys.exit(main())
