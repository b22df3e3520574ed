"""Where the providers' own API material is: shared/ beside the checkout (as CI lays it)."""

from __future__ import annotations

import os
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[3]
_CANDIDATES = [
    *(
        [Path(os.environ["AIHUB_BILLING_TEST_VENDOR_SPECS"])]
        if os.environ.get("AIHUB_BILLING_TEST_VENDOR_SPECS")
        else []
    ),
    _ROOT.parent / "shared" / "vendor-specs",
    Path("/work/shared/vendor-specs"),
]
VENDOR_SPECS = next((p for p in _CANDIDATES if (p / "stripe").is_dir()), _CANDIDATES[-1])
