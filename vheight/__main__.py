"""``python -m vheight`` runs the command line."""

import sys

from vheight.cli import main

sys.exit(main())
