"""`python -m hubscan`: the same entry point as the console script."""

from hubscan.cli import main

main()
