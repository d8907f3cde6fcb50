"""``python -m flowdsl`` runs the command line (also under torchrun)."""

import sys

from flowdsl.cli import main

sys.exit(main())
