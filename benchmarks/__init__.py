"""`make bench`: benchmarks of the recorder, writer, clip, tablet link and upload.

Outside the runtime package. Each prints ratios against a baseline measured in
the same run; ``python -m benchmarks --help`` lists the options.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Benchmarks share the real-server scaffolding of the tests (test/support).
_TEST_DIR = str(Path(__file__).resolve().parent.parent / "test")
if _TEST_DIR not in sys.path:
    sys.path.insert(0, _TEST_DIR)
