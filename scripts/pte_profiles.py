"""Precompute the PtE profile stage of a suite's runs, without training anything downstream.

    python scripts/pte_profiles.py --suite pte --split cold_users --methods pte,pte-useronly,pte-itemonly

Runs each listed method's profile stage exactly as a run would (same settings, same split, same store under
cache_dir/pte/store), so later runs find every profile cached. Useful to run the two splits' stages in
parallel processes (one thread each) before the downstream runs, or on a GPU machine ahead of a CPU grid.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--suite", required=True)
    parser.add_argument("--split", required=True)
    parser.add_argument("--methods", default="pte")
    parser.add_argument("--profile", default=None)
    parser.add_argument("--cache-dir", default="datasets/cache")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from bench.errors import BenchError
    from bench.runner import build_context
    from bench.spec import expand, load_suite

    cache_dir = Path(args.cache_dir)
    specs = expand(load_suite(args.suite, profile=args.profile))
    for name in args.methods.split(","):
        matches = [s for s in specs if s.method == name and s.split == args.split]
        if not matches:
            raise BenchError(f"suite {args.suite} has no {name} run on split {args.split}")
        with tempfile.TemporaryDirectory() as run_dir:
            method, ctx, data, *_ = build_context(matches[0], cache_dir, args.device, Path(run_dir), {})
            if not hasattr(method, "profile_embeddings"):
                raise BenchError(f"{name} is not a PtE method (no profile stage)")
            report = method.start_fit(data)
            method.profile_embeddings(ctx)
        info = report.facts.get("pte", {})
        print(json.dumps({"method": name, "split": args.split, "rounds": info.get("rounds"),
                          "distances": info.get("distances"), "cost": info.get("offline_cost")}, default=str))


if __name__ == "__main__":
    main()
