"""``python -m ruleeraser.cli``."""

import sys

from ruleeraser.cli import main

sys.exit(main())
