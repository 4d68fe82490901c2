"""One-off migration of stored records to versioned run identities (record schema 1 -> 2).

Schema-1 run ids hashed the fully resolved spec; schema-2 ids hash names, seed, layer versions and only
the non-default settings (bench.identity). For every schema-1 record under <results>/runs/ this script
re-resolves its spec with today's settings classes (dropping the former runtime keys, which become run
options), computes the new id, and rewrites the run folder under it: record.json gets `identity`,
`run_id`, `previous_run_id`, `schema_version: 2` and `provenance.options` (reconstructed from the old
spec's runtime keys); per_user.csv.gz is rewritten byte-reproducibly (same CSV). The old -> new map is
written to <results>/migrations/run-ids-scheme2.json. Two old records that map to one new id are an error.

    python scripts/migrate_run_ids.py [--results results] [--dry-run]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
from pathlib import Path

from bench import SCHEMA_VERSION
from bench.identity import FORMER_RUNTIME_KEYS
from bench.records import atomic_write, atomic_write_text, sealed_text
from bench.spec import RunSpec


def resolved_spec(old: dict) -> RunSpec:
    """The old spec with every layer re-resolved through today's settings classes."""
    from bench.catalog import METHODS
    from bench.data.cards import DatasetCard
    from bench.data.splits import resolve_split_params
    from bench.encoders import EncoderSettings
    from bench.settings import validate_settings
    from methods.backbones.cf import resolve_backbone_config

    cls = METHODS.get(old["method"])
    method = {k: v for k, v in old["method_settings"].items()
              if k not in FORMER_RUNTIME_KEYS["method"] or k in cls.Settings.model_fields}
    backbone = {k: v for k, v in old["backbone_settings"].items() if k not in FORMER_RUNTIME_KEYS["backbone"]}
    return RunSpec(
        dataset=old["dataset"], dataset_settings=DatasetCard.model_validate(old["dataset_settings"]).model_dump(
            mode="json"),
        split=old["split"], split_settings=resolve_split_params(old["split"], old["split_settings"]),
        backbone=old["backbone"], backbone_settings=resolve_backbone_config(old["backbone"], backbone),
        method=old["method"], method_settings=validate_settings(cls.Settings, method, old["method"]).model_dump(
            mode="json"),
        encoder=old["encoder"],
        encoder_settings=(validate_settings(EncoderSettings, old["encoder_settings"], "encoder").model_dump(
            mode="json") if old["encoder"] else {}),
        seed=old["seed"])


def former_options(old: dict, record: dict) -> dict:
    """Run options as they were: device from the provenance, batch sizes and flags from the old spec."""
    from bench.options import RunOptions

    method, backbone = old["method_settings"], old["backbone_settings"]
    values = {"device": (record.get("provenance", {}).get("machine") or {}).get("device", "cpu")}
    if "eval_batch_size" in backbone:
        values["eval_batch_size"] = backbone["eval_batch_size"]
    if "eval_batch_size" in method:
        values["llm_eval_batch_size"] = method["eval_batch_size"]
    for key in ("prefix_cache", "progress"):
        if key in method:
            values[key] = method[key]
    return RunOptions(**values).model_dump()


def rewrite_sidecar(path: Path) -> None:
    data = gzip.decompress(path.read_bytes())

    def write(handle) -> None:
        with gzip.GzipFile(filename="", mode="wb", fileobj=handle, mtime=0) as zipped:
            zipped.write(data)

    atomic_write(path, write)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    runs = args.results / "runs"
    mapping: dict[str, str] = {}
    plans = []
    for path in sorted(runs.glob("*/record.json")):
        record = json.loads(path.read_text())
        if record.get("schema_version", 1) != 1:
            continue
        old_id = path.parent.name
        old_spec = record["spec"]
        spec = resolved_spec(old_spec)
        if RunSpec.model_validate(old_spec).identity != spec.identity:
            raise SystemExit(f"{old_id}: identity of the stored spec differs from the re-resolved one")
        new_id = spec.run_id
        if new_id in mapping.values():
            other = next(k for k, v in mapping.items() if v == new_id)
            raise SystemExit(f"{old_id} and {other} both map to {new_id}")
        mapping[old_id] = new_id
        plans.append((path.parent, old_id, new_id, record, spec, old_spec))
    changed = sum(old != new for old, new in mapping.items())
    print(f"{len(mapping)} schema-1 records; {changed} run ids change")
    if args.dry_run:
        return 0
    for folder, old_id, new_id, record, spec, old_spec in plans:
        record.update(run_id=new_id, previous_run_id=old_id, schema_version=SCHEMA_VERSION,
                      identity=spec.identity, spec=spec.model_dump(mode="json"))
        record.setdefault("provenance", {})["options"] = former_options(old_spec, record)
        if (folder / "per_user.csv.gz").exists():
            rewrite_sidecar(folder / "per_user.csv.gz")
        atomic_write_text(folder / "record.json", sealed_text(json.loads(json.dumps(record, default=str)), folder))
        target = runs / new_id
        if target != folder:
            if target.exists():
                raise SystemExit(f"{target} exists already")
            os.rename(folder, target)
    out = args.results / "migrations" / "run-ids-scheme2.json"
    atomic_write_text(out, json.dumps(mapping, indent=1, sort_keys=True) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
