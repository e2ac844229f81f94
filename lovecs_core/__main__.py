"""``python -m lovecs_core`` runs the ``lovecs`` command line."""

import sys

from .cli import main

sys.exit(main())
