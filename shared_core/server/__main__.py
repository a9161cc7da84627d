"""``python -m shared_core.server ARGS`` runs ``routellm serve ARGS``."""

import sys

from shared_core.server.cli import main

sys.exit(main(["serve", *sys.argv[1:]]))
