"""``python -m snsot``: the same as the ``snsot`` command."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
