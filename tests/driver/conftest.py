"""tests/driver drives real zbs-csi processes over gRPC with the end-to-end harness."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
