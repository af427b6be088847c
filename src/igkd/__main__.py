"""``python -m igkd`` runs the command line."""

from igkd.cli import main

main()
