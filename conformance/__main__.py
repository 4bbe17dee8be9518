"""``python -m conformance``: see conformance/gate/cli.py."""

import sys

from conformance.gate.cli import main

sys.exit(main())
