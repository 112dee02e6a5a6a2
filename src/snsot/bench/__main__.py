"""``python -m snsot.bench``: the same as ``snsot bench``."""

import sys

from .command import main

if __name__ == "__main__":
    sys.exit(main())
