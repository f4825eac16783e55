"""The `thingledger` command line: tools/cli/app.py builds the parser from one
module per verb group (chain, run, registry, board, identity, broker,
coordinator, market, contract), which share tools/cli/common.py only.
Entry point tools.cli:main; `python -m tools.cli` runs it too."""

from tools.cli.app import build_parser, main
from tools.cli.common import (
    ENV_DATA,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    default_data_dir,
)

__all__ = ["ENV_DATA", "EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "UsageError", "build_parser",
           "default_data_dir", "main"]
