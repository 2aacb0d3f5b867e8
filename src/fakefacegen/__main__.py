"""``python -m fakefacegen`` (and ``torchrun -m fakefacegen``) runs the command line."""

import sys

from .cli import main

sys.exit(main())
