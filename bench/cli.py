"""`python -m bench` / `bench`: list, run, table. Exit 2 on bad input, with the valid choices."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bench.errors import BenchError, UnknownChoiceError

DEFAULT_RESULTS = Path(os.environ.get("BENCH_RESULTS", "results"))
DEFAULT_CACHE = Path(os.environ.get("BENCH_CACHE", "datasets/cache"))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="datasets, splits, backbones, methods, encoders, suites")

    run = sub.add_parser("run", help="run a suite, or one grid given by flags")
    run.add_argument("--suite", help="builtin suite name or a suite YAML file (comma-separated: several)")
    run.add_argument("--family", help="only this method family's runs (and their `random` base), e.g. "
                                      "llminit; tables still cover the whole suite")
    run.add_argument("--profile", help="a profile of the suite, e.g. 'paper'")
    run.add_argument("--dataset")
    run.add_argument("--split")
    run.add_argument("--backbone", help="with --suite: only the suite's runs on these backbones (comma-separated)")
    run.add_argument("--method", help="comma-separated method names; with --suite: only the suite's runs of these "
                     "methods, in this order within each seed (tables still cover the whole suite)")
    run.add_argument("--encoder", default=None)
    run.add_argument("--seeds", type=int, default=None, help="number of seeds (0..N-1)")
    run.add_argument("--set", action="append", default=[], metavar="LAYER.KEY=VALUE",
                     help="override a setting (layer: dataset, split, backbone, method, encoder)")
    run.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    run.add_argument("--workers", type=int, default=1, help="local processes running runs in parallel")
    run.add_argument("--executor", choices=["local", "ray"], default="local",
                     help="local process pool (default) or one Ray task per run")
    run.add_argument("--ray-address", default=None,
                     help="Ray cluster address (e.g. ray://head:10001 or auto); default: start a local Ray")
    run.add_argument("--cpus-per-task", type=float, default=1, help="CPUs per Ray task (--executor ray)")
    run.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    run.add_argument("--cache", "--cache-dir", dest="cache", type=Path, default=DEFAULT_CACHE,
                     help="prepared data, splits, models, embeddings; with Ray a path every worker sees")
    run.add_argument("--no-table", action="store_true", help="do not write tables after a suite")

    table = sub.add_parser("table", help="render a suite's tables from its run records")
    table.add_argument("--suite", required=True)
    table.add_argument("--profile")
    table.add_argument("--format", choices=["markdown", "latex", "csv"], default="markdown")
    table.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    table.add_argument("--correction", choices=["holm", "bh", "none"], default="holm",
                       help="p-value correction of the significance table (Benjamini-Hochberg: bh)")

    cmp = sub.add_parser("compare", help="method A vs method B (or run id A vs run id B) on stored runs")
    cmp.add_argument("a", help="run id (prefix), method name, or KEY=VALUE[,KEY=VALUE] selector")
    cmp.add_argument("b", help="same, for the side A is compared with")
    cmp.add_argument("--suite", help="only runs of this suite (name or YAML file)")
    cmp.add_argument("--profile", help="profile of --suite")
    for name in ("dataset", "split", "backbone"):
        cmp.add_argument(f"--{name}")
    cmp.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                     help="spec field or LAYER.KEY setting, e.g. backbone.embedding_size=256")
    cmp.add_argument("--metric", action="append", help="metric(s) (default ndcg@10, recall@10, ndcg@20, "
                                                       "recall@20)")
    cmp.add_argument("--correction", choices=["holm", "bh", "none"], default="holm")
    cmp.add_argument("--results", type=Path, default=DEFAULT_RESULTS)

    claims = sub.add_parser("claims", help="check the papers' claims against the stored runs")
    claims.add_argument("--file", type=Path, help="claims YAML (default bench/claims.yaml)")
    claims.add_argument("--correction", choices=["holm", "bh", "none"], default="holm")
    claims.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    claims.add_argument("--out", type=Path, help="also write the report here (default <results>/claims.md)")

    figures = sub.add_parser("figures", help="collapse curve, cold-start gains, metric by user activity")
    figures.add_argument("--only", action="append", help="collapse, coldstart_gain, activity (default all)")
    figures.add_argument("--metric", default="ndcg@10")
    figures.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    figures.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    figures.add_argument("--out", type=Path, help="folder (default <results>/figures)")
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
        flags = [f for f in ("dataset", "split") if getattr(args, f)]
        if flags:
            raise BenchError(f"--suite cannot be combined with --{', --'.join(flags)}; use --set to change "
                             "settings or write a suite file (--method / --backbone choose among its runs)")
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
    from bench.executors import run_specs
    from bench.spec import expand, parse_overrides
    from bench.tables import write_tables

    if args.suite and "," in args.suite:  # several suites, one after the other
        return max(_cmd_run(argparse.Namespace(**{**vars(args), "suite": name}))
                   for name in args.suite.split(",") if name)
    suite = _suite_from_args(args)
    overrides = parse_overrides(args.set)
    specs = expand(suite, overrides)  # every name and setting validated before any work
    table_specs = specs
    if args.suite:  # --method / --backbone run only those of the suite's runs (in --method's order per seed)
        for flag, field in (("method", "method"), ("backbone", "backbone")):
            if getattr(args, flag):
                wanted = getattr(args, flag).split(",")
                offered = sorted({getattr(s, field) for s in specs})
                unknown = [name for name in wanted if name not in offered]
                if unknown:
                    raise UnknownChoiceError(f"{flag} of suite {suite.name!r}", unknown[0], offered)
                specs = sorted((s for s in specs if getattr(s, field) in wanted),
                               key=lambda s, w=wanted, f=field: w.index(getattr(s, f)))
    if args.family:
        from bench.catalog import method_families

        families = method_families()
        if args.family not in families:
            raise UnknownChoiceError("method family", args.family, families)
        members = set(families[args.family])
        if any(s.method in members for s in specs):  # with its `random` base, where the family runs at all
            members.add("random")
        specs = [s for s in specs if s.method in members]
        if not specs:
            print(f"{suite.name}: no runs of method family {args.family!r}")
            return 0
    store = ResultStore(args.results)
    requested = {"suite": suite.name, "profile": args.profile, "set": args.set, "argv": sys.argv[1:]}
    print(f"{suite.name}: {len(specs)} runs ({sum(store.has(s.run_id) for s in specs)} already complete)")
    summary = run_specs(specs, store, args.cache, args.device, args.workers, requested,
                        executor=args.executor, ray_address=args.ray_address, cpus_per_task=args.cpus_per_task)
    print(f"done {summary['done']}, skipped {summary['skipped']}, failed {len(summary['failed'])}")
    for label, error in summary["failed"].items():
        print(f"FAILED {label}:\n{error.strip().splitlines()[-1]}", file=sys.stderr)
    if not args.no_table and suite.name != "adhoc":
        for path in write_tables(suite, table_specs, store, args.results).values():
            print(f"wrote {path}")
    return 1 if summary["failed"] else 0


def _cmd_table(args) -> int:
    from bench.records import ResultStore
    from bench.spec import expand, load_suite
    from bench.tables import write_tables

    suite = load_suite(args.suite, args.profile)
    specs = expand(suite)
    written = write_tables(suite, specs, ResultStore(args.results), args.results, correction=args.correction)
    if not written:
        raise BenchError(f"no run records of suite {suite.name!r} under {args.results}; run it first: "
                         f"python -m bench run --suite {args.suite}" + (f" --profile {args.profile}" if args.profile else ""))
    ext = {"markdown": "md", "latex": "tex", "csv": "csv"}[args.format]
    for name in ("main", "segments", "significance"):
        if f"{name}.{ext}" in written:
            print(written[f"{name}.{ext}"].read_text())
    return 0


def _cmd_compare(args) -> int:
    from bench.compare import DEFAULT_METRICS, compare_report
    from bench.records import ResultStore
    from bench.selection import parse_selector, stored_specs
    from bench.spec import expand, load_suite

    store = ResultStore(args.results)
    specs = stored_specs(store)
    if args.suite:
        wanted = {s.run_id for s in expand(load_suite(args.suite, args.profile))}
        specs = [s for s in specs if s.run_id in wanted]
    where = parse_selector(args.where)
    where.update({k: getattr(args, k) for k in ("dataset", "split", "backbone") if getattr(args, k)})
    print(compare_report(store, specs, args.a, args.b, where, tuple(args.metric or DEFAULT_METRICS),
                         args.correction))
    return 0


def _cmd_claims(args) -> int:
    from bench.claims import check_claims, load_claims, render_claims
    from bench.records import ResultStore, atomic_write_text

    store = ResultStore(args.results)
    claims = load_claims(args.file)
    report = render_claims(check_claims(store, claims, args.correction), claims, args.correction, store)
    print(report)
    out = args.out or Path(args.results) / "claims.md"
    atomic_write_text(out, "# Claims checked against the stored runs\n\nGenerated by `python -m bench claims`; "
                      "nothing here is hand-edited.\n\n" + report)
    print(f"wrote {out}")
    return 0  # a failing or missing claim is a finding, not an error


def _cmd_figures(args) -> int:
    from bench.figures import FIGURES, write_figures
    from bench.records import ResultStore

    which = args.only or list(FIGURES)
    for name in which:
        if name not in FIGURES:
            raise UnknownChoiceError("figure", name, FIGURES)
    out = args.out or Path(args.results) / "figures"
    for path in write_figures(ResultStore(args.results), out, args.cache, which, args.metric):
        print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            return _cmd_list()
        if args.command == "run":
            return _cmd_run(args)
        if args.command in ("compare", "claims", "figures"):
            return {"compare": _cmd_compare, "claims": _cmd_claims, "figures": _cmd_figures}[args.command](args)
        return _cmd_table(args)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted; completed runs are saved, rerun to resume", file=sys.stderr)
        return 130
