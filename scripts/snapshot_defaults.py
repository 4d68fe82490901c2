"""Write tests/golden/settings_defaults.json: every settings class's version and defaults.

Run it after adding a registry entry (a preset or a method) or a setting, and after bumping a class's
`version` (a changed default or behaviour); tests/test_identity.py fails when a default changed without a
bump, or when this snapshot is stale (a new entry or setting it does not hold).

    python scripts/snapshot_defaults.py
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.identity import defaults_snapshot
from bench.records import atomic_write_text

TARGET = Path(__file__).resolve().parent.parent / "tests" / "golden" / "settings_defaults.json"

def main(target: Path = TARGET) -> None:
    atomic_write_text(target, json.dumps(defaults_snapshot(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
