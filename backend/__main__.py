"""``python -m backend``: start the daemon (see :mod:`backend.daemon.main`)."""

import sys

from backend.daemon.main import main

if __name__ == "__main__":
    sys.exit(main())
