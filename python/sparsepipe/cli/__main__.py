"""``python -m sparsepipe.cli``."""

import sys

from . import main

sys.exit(main())
