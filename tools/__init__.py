"""The `thingledger` command line (tools/cli.py) and developer tools."""
