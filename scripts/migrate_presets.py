"""One-off: stored records of entries that became presets (registry entries instead of subclasses).

`llm-bidir` was a subclass whose default pooling was bidirectional_mean; it is now the LLM2Rec class with
the preset {stages: [], pooling: bidirectional_mean}. Its stored specs say `pooling: default`, which meant
bidirectional_mean for that class; each record also states what it ran with
(`method_info.llm2rec.pooling`). This script writes that recorded pooling into the stored spec (and the
re-resolved settings of the entry), checks that the run id is unchanged, and rewrites record.json.
Records whose id already matches their spec are left alone.

    python scripts/migrate_presets.py [--results results] [--dry-run]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.catalog import METHODS
from bench.records import atomic_write_text, sealed_text
from bench.spec import RunSpec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    fixed = 0
    for path in sorted((args.results / "runs").glob("*/record.json")):
        record = json.loads(path.read_text())
        spec = RunSpec.model_validate(record["spec"])
        if spec.run_id == path.parent.name:
            continue
        settings = dict(record["spec"]["method_settings"])
        ran_with = (record.get("method_info", {}).get("llm2rec") or {}).get("pooling")
        if settings.get("pooling") != "default" or ran_with is None:
            raise SystemExit(f"{path}: id {spec.run_id} differs and no preset migration applies")
        settings["pooling"] = ran_with
        resolved = METHODS.settings(spec.method, settings).model_dump(mode="json")
        new = spec.model_copy(update={"method_settings": resolved})
        if new.run_id != path.parent.name:
            raise SystemExit(f"{path}: still {new.run_id} after writing the recorded pooling {ran_with!r}")
        record["spec"] = new.model_dump(mode="json")
        record["identity"] = new.identity
        fixed += 1
        if not args.dry_run:
            atomic_write_text(path, sealed_text(json.loads(json.dumps(record, default=str)), path.parent))
    print(f"{fixed} records {'would be ' if args.dry_run else ''}rewritten; their run ids are unchanged")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
