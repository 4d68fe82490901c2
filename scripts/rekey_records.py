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
    python scripts/rekey_records.py --layer method --methods pte,pte-init --split cold_users \
        --set heldout_users=none --name pte-v2-heldout-none   # version 1's computation, stated explicitly
    python scripts/rekey_records.py --layer method --methods pte --split longtail --no-context \
        --name pte-v2-no-heldout   # a split without held-out users: version 2 computes what version 1 did

`--no-context` re-keys only when the record's split, rebuilt from its dataset and settings, has no held-out
users (an empty context): for a change that only acts on held-out users, the computation is then unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import yaml

from bench.data.splits import resolve_split_params
from bench.records import atomic_write_text, sealed_text
from bench.spec import RunSpec


def _has_context(spec: RunSpec, cache: Path) -> bool:
    """Whether the spec's split, rebuilt (or loaded, verified) from its dataset and settings, holds users
    absent from training whose history is given at inference."""
    from bench.data.cards import DatasetCard, load_dataset
    from bench.data.splits import load_or_make_split

    dataset = load_dataset(DatasetCard.model_validate(spec.dataset_settings), cache)
    return len(load_or_make_split(dataset, spec.split, spec.split_settings, cache).context) > 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--split", required=True)
    parser.add_argument("--layer", choices=("split", "method"), default="split",
                        help="the layer whose version or default changed (the only layer whose identity may move)")
    parser.add_argument("--methods", help="only records of these method entries (comma-separated)")
    parser.add_argument("--no-context", action="store_true",
                        help="refuse a record whose split has held-out users (a non-empty context)")
    parser.add_argument("--cache", type=Path, default=Path("datasets/cache"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting of --layer the stored records were made with (the former default)")
    parser.add_argument("--rename-to", help="the split's new name (same computation under that name)")
    parser.add_argument("--backbones", help="only records on these backbones (comma-separated)")
    parser.add_argument("--name", required=True, help="file name of the id map under <results>/migrations/")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    explicit = {key: yaml.safe_load(value) for key, value in (pair.split("=", 1) for pair in args.set)}
    backbones = set(args.backbones.split(",")) if args.backbones else None
    methods = set(args.methods.split(",")) if args.methods else None
    runs = args.results / "runs"
    mapping: dict[str, str] = {}
    for path in sorted(runs.glob("*/record.json")):
        record = json.loads(path.read_text())
        old_id = path.parent.name
        stored = record["spec"]
        if stored["split"] != args.split or (backbones and stored["backbone"] not in backbones) or (
                methods and stored["method"] not in methods):
            continue
        if not args.rename_to and RunSpec.model_validate(stored).run_id == old_id:
            continue
        # the stored resolution of the split settings, plus the former defaults stated explicitly; keys
        # the stored spec lacks (added since) take today's defaults, which by rule reproduce the old behaviour
        split = args.rename_to or args.split
        if args.layer == "split":
            settings = resolve_split_params(split, {**stored["split_settings"], **explicit})
            spec = RunSpec.model_validate({**stored, "split": split, "split_settings": settings})
        else:
            from bench.catalog import METHODS

            settings = METHODS.settings(stored["method"], {**stored["method_settings"], **explicit})
            spec = RunSpec.model_validate({**stored, "method_settings": settings.model_dump(mode="json")})
        changed = {layer for layer in ("dataset", "split", "backbone", "method", "encoder", "seed")
                   if layer != args.layer and spec.identity.get(layer) != record.get("identity", {}).get(layer)}
        if changed:
            raise SystemExit(f"{old_id}: layers other than the {args.layer} moved ({sorted(changed)}); not a re-key")
        if args.no_context and _has_context(spec, args.cache):
            raise SystemExit(f"{old_id}: split {spec.split!r} has held-out users (a context); not a re-key")
        new_id = spec.run_id
        if new_id in mapping.values() or (runs / new_id).exists():
            raise SystemExit(f"{old_id}: new id {new_id} is taken")
        mapping[old_id] = new_id
        if args.dry_run:
            continue
        record.update(run_id=new_id, previous_run_id=old_id, identity=spec.identity,
                      spec=spec.model_dump(mode="json"))
        atomic_write_text(path, sealed_text(json.loads(json.dumps(record, default=str)), path.parent))
        os.rename(path.parent, runs / new_id)
    print(f"{len(mapping)} {args.split} records re-keyed ({args.layer} layer)" + (" (dry run)" if args.dry_run else ""))
    if mapping and not args.dry_run:
        out = args.results / "migrations" / f"{args.name}.json"
        previous = json.loads(out.read_text()) if out.exists() else {}
        atomic_write_text(out, json.dumps({**previous, **mapping}, indent=1, sort_keys=True) + "\n")
        print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
