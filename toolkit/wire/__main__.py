"""`python -m toolkit.wire`: the wire process (toolkit/wire/process.py)."""

import sys

from toolkit.wire.process import main

sys.exit(main())
