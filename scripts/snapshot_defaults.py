"""Write tests/golden/settings_defaults.json: every settings class's version and defaults.

Run it after bumping a class's `version` (a changed default or behaviour); tests/test_identity.py fails
when a default changed without a bump, or when this snapshot is stale.

    python scripts/snapshot_defaults.py
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.identity import defaults_snapshot
from bench.records import atomic_write_text

TARGET = Path(__file__).resolve().parent.parent / "tests" / "golden" / "settings_defaults.json"

if __name__ == "__main__":
    atomic_write_text(TARGET, json.dumps(defaults_snapshot(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {TARGET}")
