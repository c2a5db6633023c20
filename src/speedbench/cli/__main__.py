"""``python -m speedbench.cli``."""

from speedbench.cli import main

main()
