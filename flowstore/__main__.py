"""``python -m flowstore``: the same command line as the ``flowstore`` console script."""

from flowstore.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
