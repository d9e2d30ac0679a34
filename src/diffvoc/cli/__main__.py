"""``python -m diffvoc.cli``: the ``diffvoc`` command."""

import sys

from diffvoc.cli import main

sys.exit(main())
