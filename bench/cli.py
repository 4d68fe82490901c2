"""`python -m bench` / `bench`: list, run, table. Exit 2 on bad input, with the valid choices."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bench.errors import BenchError

DEFAULT_RESULTS = Path(os.environ.get("BENCH_RESULTS", "results"))
DEFAULT_CACHE = Path(os.environ.get("BENCH_CACHE", "datasets/cache"))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="datasets, splits, backbones, methods, encoders, suites")

    run = sub.add_parser("run", help="run a suite, or one grid given by flags")
    run.add_argument("--suite", help="builtin suite name or a suite YAML file")
    run.add_argument("--profile", help="a profile of the suite, e.g. 'paper'")
    run.add_argument("--dataset")
    run.add_argument("--split")
    run.add_argument("--backbone")
    run.add_argument("--method", help="comma-separated method names")
    run.add_argument("--encoder", default=None)
    run.add_argument("--seeds", type=int, default=None, help="number of seeds (0..N-1)")
    run.add_argument("--set", action="append", default=[], metavar="LAYER.KEY=VALUE",
                     help="override a setting (layer: dataset, split, backbone, method, encoder)")
    run.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    run.add_argument("--workers", type=int, default=1, help="local processes running runs in parallel")
    run.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    run.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    run.add_argument("--no-table", action="store_true", help="do not write tables after a suite")

    table = sub.add_parser("table", help="render a suite's tables from its run records")
    table.add_argument("--suite", required=True)
    table.add_argument("--profile")
    table.add_argument("--format", choices=["markdown", "latex", "csv"], default="markdown")
    table.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    return parser


def _cmd_list() -> int:
    from bench.backbones import BACKBONES
    from bench.catalog import METHODS
    from bench.data import CARD_NAMES
    from bench.encoders import ENCODER_NAMES
    from bench.spec import load_suite, suite_names
    from bench.splits import SPLIT_INFO

    sections = {
        "datasets": dict(CARD_NAMES),
        "splits": SPLIT_INFO,
        "backbones": {k: v.info for k, v in BACKBONES.items()},
        "methods": {k: METHODS.info(k) for k in METHODS.names()},
        "encoders": dict(ENCODER_NAMES),
        "suites": {k: load_suite(k).description for k in suite_names()},
    }
    for title, entries in sections.items():
        print(f"{title}:")
        for name, info in entries.items():
            print(f"  {name:<16} {info}")
    return 0


def _suite_from_args(args):
    from bench.spec import Suite, load_suite

    if args.suite:
        flags = [f for f in ("dataset", "split", "backbone", "method") if getattr(args, f)]
        if flags:
            raise BenchError(f"--suite cannot be combined with --{', --'.join(flags)}; use --set to change "
                             "settings or write a suite file")
        suite = load_suite(args.suite, args.profile)
        if args.seeds is not None:
            suite.seeds = list(range(args.seeds))
        if args.encoder:
            suite.encoder = args.encoder
        return suite
    missing = [f for f in ("dataset", "split", "backbone", "method") if not getattr(args, f)]
    if missing:
        raise BenchError(f"give --suite, or all of --dataset --split --backbone --method (missing: "
                         f"--{', --'.join(missing)})")
    return Suite(name="adhoc", description="runs given on the command line",
                 datasets=[args.dataset], splits=[args.split], backbones=[args.backbone],
                 methods=args.method.split(","), seeds=list(range(args.seeds or 1)),
                 encoder=args.encoder or "minilm")


def _cmd_run(args) -> int:
    from bench.records import ResultStore
    from bench.runner import run_specs
    from bench.spec import expand, parse_overrides
    from bench.tables import write_tables

    suite = _suite_from_args(args)
    overrides = parse_overrides(args.set)
    specs = expand(suite, overrides)  # every name and setting validated before any work
    store = ResultStore(args.results)
    requested = {"suite": suite.name, "profile": args.profile, "set": args.set, "argv": sys.argv[1:]}
    print(f"{suite.name}: {len(specs)} runs ({sum(store.has(s.run_id) for s in specs)} already complete)")
    summary = run_specs(specs, store, args.cache, args.device, args.workers, requested)
    print(f"done {summary['done']}, skipped {summary['skipped']}, failed {len(summary['failed'])}")
    for label, error in summary["failed"].items():
        print(f"FAILED {label}:\n{error.strip().splitlines()[-1]}", file=sys.stderr)
    if not args.no_table and suite.name != "adhoc":
        for path in write_tables(suite, specs, store, args.results).values():
            print(f"wrote {path}")
    return 1 if summary["failed"] else 0


def _cmd_table(args) -> int:
    from bench.records import ResultStore
    from bench.spec import expand, load_suite
    from bench.tables import write_tables

    suite = load_suite(args.suite, args.profile)
    specs = expand(suite)
    written = write_tables(suite, specs, ResultStore(args.results), args.results)
    if not written:
        raise BenchError(f"no run records of suite {suite.name!r} under {args.results}; run it first: "
                         f"python -m bench run --suite {args.suite}")
    ext = {"markdown": "md", "latex": "tex", "csv": "csv"}[args.format]
    for name in ("main", "segments", "significance"):
        if f"{name}.{ext}" in written:
            print(written[f"{name}.{ext}"].read_text())
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            return _cmd_list()
        if args.command == "run":
            return _cmd_run(args)
        return _cmd_table(args)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted; completed runs are saved, rerun to resume", file=sys.stderr)
        return 130
