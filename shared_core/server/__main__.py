"""``python -m shared_core.server ARGS`` runs ``routellm serve ARGS``."""

import sys

from shared_core.server.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
