"""Run chosen runs of a suite in a chosen order (what `bench run` does, restricted and ordered).

    python scripts/run_subset.py --suite longtail --methods random,llminit-var-seq,pte --workers 1

`--methods` / `--backbones` filter the suite's runs and give their order within each seed (runs stay
seed-major). Records are written exactly as `bench run` writes them; completed runs are skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--suite", required=True)
    parser.add_argument("--profile", default=None)
    parser.add_argument("--methods", default=None)
    parser.add_argument("--backbones", default=None)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--results", default="results")
    parser.add_argument("--cache", default="datasets/cache")
    args = parser.parse_args()

    from bench.records import ResultStore
    from bench.runner import run_specs
    from bench.spec import expand, load_suite

    suite = load_suite(args.suite, profile=args.profile)
    specs = expand(suite)
    methods = args.methods.split(",") if args.methods else None
    backbones = args.backbones.split(",") if args.backbones else None
    chosen = [s for s in specs if (methods is None or s.method in methods)
              and (backbones is None or s.backbone in backbones)]
    if methods:
        chosen.sort(key=lambda s: methods.index(s.method))
    requested = {"suite": suite.name, "profile": args.profile, "set": [], "argv": ["run", "--suite", args.suite],
                 "subset": sys.argv[1:]}
    summary = run_specs(chosen, ResultStore(Path(args.results)), Path(args.cache), "cpu", args.workers, requested)
    print(json.dumps(summary, default=str))


if __name__ == "__main__":
    main()
