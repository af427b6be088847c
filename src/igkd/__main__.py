"""``python -m igkd`` runs the command line."""

from igkd.cli.main import main

main()
