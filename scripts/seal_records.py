"""Seal the run records written before records were sealed: check each, then add its seal in place.

A record is sealed only when it passes every check `bench verify --records` makes: the store's (it parses,
`status: complete`, current schema, its folder's run id, the required fields `spec` and `metrics` with
`overall`, its per_user.csv.gz sidecar), its run id is the one its spec hashes to today, and each overall
metric is the mean of its per-user sidecar column where it has one. The seal (`bench.records`: sha256 of the
record's canonical JSON without the seal, and of each sidecar) is added and the file replaced atomically,
keeping its permission bits; nothing else in it changes (the store's layout: indent 1, sorted keys). A record
that fails is refused and listed, and left as it is (exit 1); an already sealed record whose seal holds is
left alone, so a second run changes nothing. A run folder another process holds the lock of (a run being
written) is skipped.

    python scripts/seal_records.py                 # ./results
    python scripts/seal_records.py results --dry-run   # check and report only (writes nothing, takes no lock)
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.records import ResultStore, atomic_write_text, inspect_record, sealed_text  # noqa: E402
from bench.verify import check_stored_record  # noqa: E402


def seal_store(results: Path, dry_run: bool = False, lock_timeout: float = 5.0) -> dict[str, list]:
    """{"sealed", "already", "refused", "busy"}: run ids sealed now, sealed before, refused (with the problem)
    and skipped because another process held their lock."""
    from filelock import Timeout

    store = ResultStore(results)
    out: dict[str, list] = {"sealed": [], "already": [], "refused": [], "busy": []}
    runs = Path(results) / "runs"
    for folder in sorted(p for p in runs.iterdir() if p.is_dir() and not p.name.startswith(".")):
        path = folder / "record.json"
        if not path.exists():
            continue
        run_id = folder.name
        try:  # a dry run writes nothing, lock files included
            with contextlib.nullcontext() if dry_run else store.lock(run_id, timeout=lock_timeout):
                problem, sealed = check_stored_record(folder)
                if problem is not None:
                    out["refused"].append((run_id, problem))
                    continue
                if sealed:
                    out["already"].append(run_id)
                    continue
                if not dry_run:
                    record, _, _ = inspect_record(path, run_id)
                    atomic_write_text(path, sealed_text(record, folder), mode=path.stat().st_mode & 0o7777)
                    problem, sealed = check_stored_record(folder)
                    if problem is not None or not sealed:  # a bug, not bad input
                        raise RuntimeError(f"{path}: sealed just now but does not check: {problem}")
                out["sealed"].append(run_id)
        except Timeout:
            out["busy"].append(run_id)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="?", type=Path, default=Path("results"),
                        help="the results folder holding runs/<run_id>/record.json (default: results)")
    parser.add_argument("--dry-run", action="store_true", help="check and report; write nothing")
    args = parser.parse_args(argv)
    if not (args.results / "runs").is_dir():
        print(f"seal_records: no run records under {args.results} ({args.results / 'runs'} is not a folder)",
              file=sys.stderr)
        return 2
    out = seal_store(args.results, dry_run=args.dry_run)
    for run_id, problem in out["refused"]:
        print(f"refused {args.results / 'runs' / run_id / 'record.json'}: {problem}")
    for run_id in out["busy"]:
        print(f"skipped {args.results / 'runs' / run_id}: another process holds its lock (a run being written)")
    verb = "would seal" if args.dry_run else "sealed"
    print(f"seal_records: {verb} {len(out['sealed'])}, already sealed {len(out['already'])}, refused "
          f"{len(out['refused'])}, skipped (locked) {len(out['busy'])}, under {args.results / 'runs'}")
    return 1 if out["refused"] else 0


if __name__ == "__main__":
    sys.exit(main())
