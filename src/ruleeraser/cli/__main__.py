"""``python -m ruleeraser.cli``."""

from ruleeraser.cli import run

run()
