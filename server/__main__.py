"""`python -m server`: the `imprint` command line."""

from server.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
