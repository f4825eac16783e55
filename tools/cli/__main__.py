"""`python -m tools.cli ...`: the `thingledger` command from a checkout."""

import sys

from tools.cli.app import main

sys.exit(main())
