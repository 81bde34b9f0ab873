"""The `tierstream` command line."""
