"""The `imprint` command line."""
