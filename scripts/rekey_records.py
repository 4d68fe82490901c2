"""Re-key stored records after a settings default changed (with its class's version bump), where the record's
computation is exactly reproduced by stating the former default explicitly.

Example: half_history's `rounding` default became `ceil` (version 2); a record made before with floor
rounding is exactly a version-2 run with `rounding: floor`. For every record of the named split whose
stored id is not the id its spec gives today, this script writes the explicit settings into the spec
(`--set KEY=VALUE`, split layer), re-resolves it, checks nothing else moved, and moves the run folder to
the new id (record.json gets `run_id`, `identity`, `spec` and `previous_run_id`; the sidecar is unchanged).
The old -> new map is appended to <results>/migrations/<name>.json.

    python scripts/rekey_records.py --split half_history --set rounding=floor --name half-history-floor
    python scripts/rekey_records.py --split ctr_temporal --name ctr-window-start   # spec states it already
    python scripts/rekey_records.py --split cold_users --rename-to new_users_fewshot --backbones lightgcn,sgl,sgcl \
        --name cold-users-fewshot   # a split renamed, its computation unchanged
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import yaml

from bench.data.splits import resolve_split_params
from bench.records import atomic_write_text
from bench.spec import RunSpec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--split", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a split setting the stored records were made with (the former default)")
    parser.add_argument("--rename-to", help="the split's new name (same computation under that name)")
    parser.add_argument("--backbones", help="only records on these backbones (comma-separated)")
    parser.add_argument("--name", required=True, help="file name of the id map under <results>/migrations/")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    explicit = {key: yaml.safe_load(value) for key, value in (pair.split("=", 1) for pair in args.set)}
    backbones = set(args.backbones.split(",")) if args.backbones else None
    runs = args.results / "runs"
    mapping: dict[str, str] = {}
    for path in sorted(runs.glob("*/record.json")):
        record = json.loads(path.read_text())
        old_id = path.parent.name
        stored = record["spec"]
        if stored["split"] != args.split or (backbones and stored["backbone"] not in backbones):
            continue
        if not args.rename_to and RunSpec.model_validate(stored).run_id == old_id:
            continue
        # the stored resolution of the split settings, plus the former defaults stated explicitly; keys
        # the stored spec lacks (added since) take today's defaults, which by rule reproduce the old behaviour
        split = args.rename_to or args.split
        settings = resolve_split_params(split, {**stored["split_settings"], **explicit})
        spec = RunSpec.model_validate({**stored, "split": split, "split_settings": settings})
        changed = {layer for layer in ("dataset", "backbone", "method", "encoder", "seed")
                   if spec.identity.get(layer) != record.get("identity", {}).get(layer)}
        if changed:
            raise SystemExit(f"{old_id}: layers other than the split moved ({sorted(changed)}); not a re-key")
        new_id = spec.run_id
        if new_id in mapping.values() or (runs / new_id).exists():
            raise SystemExit(f"{old_id}: new id {new_id} is taken")
        mapping[old_id] = new_id
        if args.dry_run:
            continue
        record.update(run_id=new_id, previous_run_id=old_id, identity=spec.identity,
                      spec=spec.model_dump(mode="json"))
        atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True, default=str))
        os.rename(path.parent, runs / new_id)
    print(f"{len(mapping)} {args.split} records re-keyed" + (" (dry run)" if args.dry_run else ""))
    if mapping and not args.dry_run:
        out = args.results / "migrations" / f"{args.name}.json"
        previous = json.loads(out.read_text()) if out.exists() else {}
        atomic_write_text(out, json.dumps({**previous, **mapping}, indent=1, sort_keys=True) + "\n")
        print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
