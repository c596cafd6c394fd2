"""python -m zbs_lite == the zbs-lite command."""

import sys

from zbs_lite.cli import main

sys.exit(main())
