"""`python -m bench` / `bench`: list, run, table, view, data, tune, verify, compare, claims, figures. Exit 2 on bad
input, with one line naming the setting, file or value and the valid choices."""

from __future__ import annotations

import argparse
import errno
import math
import os
import shutil
import sys
from pathlib import Path

from bench.errors import BenchError, UnknownChoiceError
from bench.options import OPTION_NAMES
from bench.spec import MAX_SEEDS

DEFAULT_RESULTS = Path(os.environ.get("BENCH_RESULTS", "results"))
DEFAULT_CACHE = Path(os.environ.get("BENCH_CACHE", "datasets/cache"))
# free space a results or cache folder's file system must have before `bench run` starts (records, logs, prepared
# data and models need room; a full disk mid-run loses the run): BENCH_MIN_FREE_MB, default 64 MiB
MIN_FREE_MB = 64
MAX_WORKERS = 1024
# OSError numbers that mean "this folder cannot take what bench writes": one line, not a traceback
FOLDER_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR, errno.EISDIR}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="datasets, splits, backbones, methods, encoders, suites")

    run = sub.add_parser("run", help="run a suite, or one grid given by flags")
    run.add_argument("--suite", help="builtin suite name or a suite YAML file (comma-separated: several)")
    run.add_argument("--family", help="only this method family's runs (and their `random` base), e.g. "
                                      "llminit; tables still cover the whole suite")
    run.add_argument("--profile", help="a profile of the suite, e.g. 'paper'; without --suite: cpu (default, the "
                                       "suites' CPU-sized settings) or paper (the papers' values)")
    run.add_argument("--dataset", help="a data set: a builtin name (ml-100k, ml-1m), a card you added (bench data add; "
                     "cards/NAME.yaml, $BENCH_CARDS), a card YAML file, or a data folder or file (RecBole .inter with "
                     "an optional .item, CSV with named columns, Amazon 2018 / 2023 JSON lines): format detected, no "
                     "filters, runs named by the folder's or file's name (bench data check PATH shows what it reads)")
    run.add_argument("--split", help="with --suite: only the suite's runs on these splits (comma-separated)")
    run.add_argument("--backbone", help="with --suite: only the suite's runs on these backbones (comma-separated)")
    run.add_argument("--method", help="comma-separated method names; with --suite: only the suite's runs of these "
                     "methods, in this order within each seed (tables still cover the whole suite)")
    run.add_argument("--encoder", default=None, help="text encoder of the methods that embed item text (default "
                     "minilm; `bench list` shows the encoders)")
    run.add_argument("--seeds", type=int, default=None, help="number of seeds (0..N-1)")
    run.add_argument("--extra-seeds", type=int, default=None, metavar="N",
                     help="with --suite: N more seeds (after each cell's last) for the chosen cells only: those "
                     "--method / --backbone / --split select (e.g. the cells whose significance table asks for "
                     "more seeds, with their baseline); tables, compare and claims use every stored seed")
    run.add_argument("--set", action="append", default=[], metavar="LAYER.KEY=VALUE",
                     help="override a setting (layer: dataset, split, backbone, method, encoder)")
    run.add_argument("--device", default=None, help="cpu (default), cuda, cuda:N or mps (a run option: not in "
                                                    "run ids)")
    run.add_argument("--threads", type=int, default=None,
                     help="torch threads per run (default: CPU cores / workers); recorded in provenance")
    run.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                     help="run option (not a setting, never in run ids): " + ", ".join(OPTION_NAMES))
    run.add_argument("--workers", type=int, default=1, help="local processes running runs in parallel")
    run.add_argument("--executor", choices=["local", "ray"], default="local",
                     help="local process pool (default) or one Ray task per run")
    run.add_argument("--ray-address", default=None,
                     help="Ray cluster address (e.g. ray://head:10001 or auto); default: start a local Ray")
    run.add_argument("--cpus-per-task", type=float, default=1, help="CPUs per Ray task (--executor ray)")
    run.add_argument("--results", type=Path, default=DEFAULT_RESULTS,
                     help="the results folder: run records under <results>/runs/, tables under <results>/<suite>/ (default results, or $BENCH_RESULTS)")
    run.add_argument("--cache", "--cache-dir", dest="cache", type=Path, default=DEFAULT_CACHE,
                     help="prepared data, splits, models, embeddings; with Ray a path every worker sees")
    run.add_argument("--no-table", action="store_true", help="do not write tables after a suite")

    table = sub.add_parser("table", help="render a suite's tables from its run records",
                           description="Write a suite's tables (Markdown, LaTeX, CSV) from its run records into "
                           "<out>/<suite>/ and print those of --format. Markdown and CSV carry every metric and "
                           "column; the LaTeX tables are paper tables: columns grouped by dataset / split with "
                           "the metrics beneath, best per backbone and column bold, second underlined, "
                           "\u2191 / \u2193 significantly better / worse than the baseline, \u2021 cap-stopped, "
                           "caption and label; <name>.tex is page-wide "
                           "(table*), <name>_column.tex column-wide (table; means only). Needs booktabs.")
    table.add_argument("--suite", help="the suite whose tables are written (or --runs / --last)")
    table.add_argument("--runs", help="instead of a suite: these run ids (or unique prefixes), comma-separated: "
                                      "one row each with key metrics, convergence and record path (printed only)")
    table.add_argument("--last", type=int, metavar="N", help="instead of a suite: the N runs that finished last "
                                                             "(by the finish time in their records)")
    table.add_argument("--profile", help="a profile of the suite (its tables go to <out>/<suite>-<profile>/)")
    table.add_argument("--format", choices=["markdown", "latex", "csv"], default="markdown",
                       help="which tables to print (all formats are written)")
    table.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="where the run records are")
    table.add_argument("--out", type=Path, help="where the tables go, <out>/<suite>/ (default: --results)")
    table.add_argument("--correction", choices=["holm", "bh", "none"], default="holm",
                       help="p-value correction over the significance table's comparisons, the family every "
                       "table of the suite names (Benjamini-Hochberg: bh)")
    table.add_argument("--metrics", help="LaTeX tables: these metrics, in this order, comma-separated, e.g. "
                       "recall@10,ndcg@10 (default: recall/ndcg@10/20 page-wide, @10 column-wide; ndcg@10 in "
                       "the segment table; auc,uauc for pointwise suites)")
    table.add_argument("--columns", help="LaTeX tables: these column groups, comma-separated: dataset/split "
                       "groups (ml-100k/half_history, or the bare split name) and / or user segments (overall, "
                       "user:cold, item:tail, ...; pair:warm / pair:cold for pointwise suites); default every "
                       "group, overall in the main table, every segment in the segment table (cold / tail ones "
                       "column-wide)")
    table.add_argument("--latex-width", default="both", help="page (table*, <name>.tex), column (table, "
                       "<name>_column.tex) or both (default)")
    table.add_argument("--render", action="store_true", help="also compile each written .tex with pdflatex and "
                       "write <name>.png next to it (pdftoppm), saying whether the table fits its width")

    verify = sub.add_parser("verify", help="rerun a seeded sample of a suite's stored runs into a scratch store "
                                           "and compare them with the stored records; --records: check every "
                                           "stored record's seal and content, rerunning nothing")
    verify.add_argument("--suite", help="the suite whose stored runs are rerun (required unless --records)")
    verify.add_argument("--records", action="store_true",
                        help="check every record under --results (seal, required fields, sidecars, run id of its "
                             "spec, overall metrics = per-user means); one line per bad record; exit 1 if any")
    verify.add_argument("--profile", help="a profile of --suite")
    verify.add_argument("--sample", type=int, default=3, help="how many stored runs to rerun (default 3)")
    verify.add_argument("--all", action="store_true", help="rerun every stored run of the suite")
    verify.add_argument("--seed", type=int, default=0, help="seed of the sample draw")
    verify.add_argument("--results", type=Path, default=DEFAULT_RESULTS,
                        help="the results folder: run records under <results>/runs/, tables under <results>/<suite>/ (default results, or $BENCH_RESULTS)")
    verify.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                        help="the cache folder: prepared data sets, splits, models, embeddings (default datasets/cache, or $BENCH_CACHE)")
    verify.add_argument("--scratch", type=Path, help="scratch results folder (default: a temporary folder)")
    verify.add_argument("--device", default=None, help="cpu (default), cuda, cuda:N or mps for the reruns")
    verify.add_argument("--threads", type=int, default=None, help="torch threads per rerun (default: CPU cores / "
                                                                    "workers)")
    verify.add_argument("--workers", type=int, default=1, help="local processes rerunning in parallel")
    verify.add_argument("--keep", action="store_true", help="keep the temporary scratch folder (default: removed "
                                                             "once compared; a --scratch folder is always kept)")

    cmp = sub.add_parser("compare", help="method A vs method B (or run id A vs run id B) on stored runs")
    cmp.add_argument("a", help="run id (prefix), method name, or KEY=VALUE[,KEY=VALUE] selector")
    cmp.add_argument("b", help="same, for the side A is compared with")
    cmp.add_argument("--suite", help="only runs of this suite (name or YAML file)")
    cmp.add_argument("--profile", help="profile of --suite")
    for name in ("dataset", "split", "backbone"):
        cmp.add_argument(f"--{name}", help=f"only runs on this {name}")
    cmp.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                     help="spec field or LAYER.KEY setting, e.g. backbone.embedding_size=256")
    cmp.add_argument("--metric", action="append", help="metric(s) (default ndcg@10, recall@10, ndcg@20, "
                                                       "recall@20)")
    cmp.add_argument("--correction", choices=["holm", "bh", "none"], default="holm",
                     help="correction over the family of this call: every row (context x metric) it prints")
    cmp.add_argument("--results", type=Path, default=DEFAULT_RESULTS,
                     help="the results folder: run records under <results>/runs/, tables under <results>/<suite>/ (default results, or $BENCH_RESULTS)")

    claims = sub.add_parser("claims", help="check the papers' claims against the stored runs")
    claims.add_argument("--file", type=Path, help="claims YAML (default bench/report/claims.yaml)")
    claims.add_argument("--correction", choices=["holm", "bh", "none"], default="holm",
                        help="correction over the family of the report: every comparison of the claims file")
    claims.add_argument("--results", type=Path, default=DEFAULT_RESULTS,
                        help="the results folder: run records under <results>/runs/, tables under <results>/<suite>/ (default results, or $BENCH_RESULTS)")
    claims.add_argument("--out", type=Path, help="also write the report here (default <results>/claims.md)")

    figures = sub.add_parser("figures", help="collapse curve, cold-start gains, metric by user activity")
    figures.add_argument("--only", action="append", help="collapse, coldstart_gain, activity, tradeoff, tuning "
                                                         "(the bench tune studies; default all; repeat for several)")
    figures.add_argument("--metric", default="ndcg@10", help="the metric the figures plot (default ndcg@10)")
    figures.add_argument("--results", type=Path, default=DEFAULT_RESULTS,
                         help="the results folder: run records under <results>/runs/, tables under <results>/<suite>/ (default results, or $BENCH_RESULTS)")
    figures.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                         help="the cache folder: prepared data sets, splits, models, embeddings (default datasets/cache, or $BENCH_CACHE)")
    figures.add_argument("--out", type=Path, help="folder (default <results>/figures)")

    from bench import tuning

    tuning.add_parser(sub)

    view = sub.add_parser("view", help="write the static results site (opens from file://, no server)",
                          description="Write a static HTML site of the stored results: suites, sortable and "
                          "filterable tables, figures, claims, significance, and one page per run record. Open "
                          "<out>/index.html in a browser; nothing is fetched from the network.")
    view.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="where the run records and tables are")
    view.add_argument("--out", type=Path, help="the site's folder (default <results>/site)")
    view.add_argument("--suite", action="append", nargs="+", metavar="NAME",
                      help="only these suites (default every builtin suite; default profiles)")

    data = sub.add_parser("data", help="your own data: check a data folder or file, add it as a named data set",
                          description="Your own data: RecBole atomic files (a folder or .inter file, an optional "
                          ".item file with the item text), a CSV / TSV file with a header naming the columns (user, "
                          "item, optional rating and timestamp; found by common names such as user_id, userId, "
                          "item_id, movieId, asin, rating, timestamp), or Amazon 2018 / 2023 reviews (JSON lines, "
                          "meta_<Category> next to them for item text). Item text is optional: methods that need it "
                          "refuse a data set without it before any work.")
    data_sub = data.add_subparsers(dest="data_command", required=True, help="check: what a folder or file holds; add: write its card")
    for verb, text in (("check", "print the card a data folder or file would run with, its counts before and after "
                                 "the filters, and whether it has item text"),
                       ("add", "check the data, then write its card NAME.yaml to the user card folder (cards/, or "
                               "$BENCH_CARDS), so that --dataset NAME runs it")):
        cmd = data_sub.add_parser(verb, help=text, description=text)
        cmd.add_argument("path", metavar="PATH", help="a data folder or file (or a card file or name)")
        cmd.add_argument("--name", required=verb == "add",
                         help="the data set's name (runs and tables are labelled by it; default for check: the "
                              "folder's or file's name)")
        cmd.add_argument("--columns", metavar="ROLE=COLUMN,...",
                         help="CSV: the columns of user, item, rating, timestamp, when their names are not the "
                              "common ones, e.g. user=customer,item=sku")
        cmd.add_argument("--min-rating", type=float, default=None,
                         help="keep interactions rated at least this (default: keep all)")
        cmd.add_argument("--kcore", type=int, default=None,
                         help="iterative k-core: drop users and items with fewer than K interactions until none is "
                              "left (default 0: off)")
        if verb == "check":
            cmd.add_argument("--card-out", metavar="FILE", help="also write the card to FILE (YAML)")
        else:
            cmd.add_argument("--cards", metavar="DIR", help="the user card folder (default $BENCH_CARDS or cards/ in "
                                                            "the working folder, where --dataset NAME looks)")
            cmd.add_argument("--force", action="store_true", help="replace a card of that name")
    return parser


def _cmd_list() -> int:
    from bench.backbones import BACKBONES
    from bench.catalog import METHODS
    from bench.data.cards import CARD_NAMES, user_card_dir, user_card_names
    from bench.data.splits import SPLIT_INFO
    from bench.encoders import ENCODER_NAMES
    from bench.spec import load_suite, suite_names

    sections = {
        "datasets": {**CARD_NAMES, **{k: f"your card ({v})" for k, v in user_card_names().items()},
                     "PATH": "your own data, as --dataset PATH: a data folder or file (RecBole .inter [+ .item], "
                             "CSV with named columns, Amazon JSON lines) or a card file; `bench data check PATH` "
                             f"shows what it reads, `bench data add PATH --name NAME` adds it to {user_card_dir()}/"},
        "splits": SPLIT_INFO,
        "backbones": {k: v.info for k, v in BACKBONES.items()},
        "methods": {k: f"[{METHODS.family(k)}] {METHODS.info(k)}"
                    + (f" (preset: {', '.join(f'{a}={v}' for a, v in METHODS.preset(k).items())})"
                       if METHODS.preset(k) else "") for k in METHODS.names()},
        "encoders": dict(ENCODER_NAMES),
        "suites": {k: load_suite(k).description for k in suite_names()},
    }
    for title, entries in sections.items():
        print(f"{title}:")
        for name, info in entries.items():
            print(f"  {name:<20} {info}")
    return 0


def _suite_from_args(args):
    from bench.spec import load_suite

    if args.suite:
        if args.dataset:
            raise BenchError("--suite cannot be combined with --dataset; use --set to change settings or write a "
                             "suite file (--method / --backbone / --split choose among its runs)")
        suite = load_suite(args.suite, args.profile)
        if args.seeds is not None:
            _check_count("--seeds", args.seeds, MAX_SEEDS)
            suite.seeds = list(range(args.seeds))
        if args.encoder:
            suite.encoder = args.encoder
        return suite
    missing = [f for f in ("dataset", "split", "backbone", "method") if not getattr(args, f)]
    if missing:
        raise BenchError(f"give --suite, or all of --dataset --split --backbone --method (missing: "
                         f"--{', --'.join(missing)})")
    if args.seeds is not None:
        _check_count("--seeds", args.seeds, MAX_SEEDS)
    from bench.data.cards import resolve_dataset
    from bench.spec import adhoc_suite

    return adhoc_suite(resolve_dataset(args.dataset), args.split, args.backbone, args.method.split(","),
                       args.seeds or 1, args.encoder or "minilm", args.profile)


def _check_count(flag: str, value: int | float, limit: int | None = None) -> None:
    if not math.isfinite(value) or value < 1:
        raise BenchError(f"{flag} {value}: must be >= 1")
    if limit is not None and value > limit:
        raise BenchError(f"{flag} {value}: must be <= {limit}")


def check_folder(folder: Path, what: str, flag: str) -> None:
    """`folder` (created if missing) takes files and its file system has BENCH_MIN_FREE_MB free: a probe file is
    written, synced and removed. BenchError (one line) naming the folder otherwise, before any work."""
    folder = Path(folder)
    try:
        minimum = float(os.environ.get("BENCH_MIN_FREE_MB", MIN_FREE_MB))
    except ValueError:
        raise BenchError(f"BENCH_MIN_FREE_MB={os.environ['BENCH_MIN_FREE_MB']!r}: expected a number of MiB") from None
    if folder.exists() and not folder.is_dir():
        raise BenchError(f"{flag} {folder}: the {what} folder is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchError(f"{flag} {folder}: cannot create the {what} folder ({exc.strerror})") from None
    probe = folder / f".bench-probe-{os.getpid()}"
    try:
        with open(probe, "wb") as handle:
            handle.write(b"\0" * 4096)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        raise BenchError(f"{flag} {folder}: the {what} folder is not writable ({exc.strerror})") from None
    finally:
        try:
            probe.unlink(missing_ok=True)
        except OSError:
            pass
    free = shutil.disk_usage(folder).free / 2**20
    if free < minimum:
        raise BenchError(f"{flag} {folder}: the {what} folder's file system has {free:.1f} MiB free; bench needs "
                         f"at least {minimum:g} MiB there (BENCH_MIN_FREE_MB)")


def _run_options(args, suite_options: dict | None = None):
    """RunOptions from the suite's `options`, then --option KEY=VALUE, --device and --threads."""
    import yaml

    from bench.options import make_options

    values = dict(suite_options or {})
    for pair in getattr(args, "option", []) or []:
        if "=" not in pair:
            raise BenchError(f"--option {pair!r}: expected KEY=VALUE with KEY one of {', '.join(OPTION_NAMES)}")
        key, value = pair.split("=", 1)
        values[key] = yaml.safe_load(value)
    for key in ("device", "threads"):
        if getattr(args, key, None) is not None:
            values[key] = getattr(args, key)
    return make_options(values)


def _cmd_run(args) -> int:
    from bench.executors import run_specs
    from bench.records import ResultStore
    from bench.report.tables import write_tables
    from bench.spec import expand, parse_overrides

    if args.suite and "," in args.suite:  # several suites, one after the other
        return max(_cmd_run(argparse.Namespace(**{**vars(args), "suite": name}))
                   for name in args.suite.split(",") if name)
    _check_count("--workers", args.workers, MAX_WORKERS)
    if not (math.isfinite(args.cpus_per_task) and 0 < args.cpus_per_task <= MAX_WORKERS):
        raise BenchError(f"--cpus-per-task {args.cpus_per_task}: must be > 0 and <= {MAX_WORKERS}")
    suite = _suite_from_args(args)
    options = _run_options(args, suite.options)
    overrides = parse_overrides(args.set)
    specs = expand(suite, overrides)  # every name and setting validated before any work
    table_specs = specs
    if args.suite:  # --method / --backbone / --split: only those of the suite's runs (--method's order per seed)
        for flag, field in (("method", "method"), ("backbone", "backbone"), ("split", "split")):
            if getattr(args, flag):
                wanted = getattr(args, flag).split(",")
                offered = sorted({getattr(s, field) for s in specs})
                unknown = [name for name in wanted if name not in offered]
                if unknown:
                    raise UnknownChoiceError(f"{flag} of suite {suite.name!r}", unknown[0], offered)
                specs = sorted((s for s in specs if getattr(s, field) in wanted),
                               key=lambda s, w=wanted, f=field: w.index(getattr(s, f)))
    if args.extra_seeds is not None:
        from bench.spec import with_extra_seeds

        if not args.suite:
            raise BenchError("--extra-seeds adds seeds to cells of a suite: give --suite (and --method / --backbone "
                             "/ --split to choose the cells); without a suite, --seeds sets the seeds")
        _check_count("--extra-seeds", args.extra_seeds, MAX_SEEDS)
        specs = with_extra_seeds(specs, args.extra_seeds)
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
    profile = args.profile
    if not args.suite:  # ad-hoc runs take a named profile (bench/profiles/adhoc.yaml), recorded in each run
        from bench.spec import ADHOC_DEFAULT_PROFILE, adhoc_profiles

        profile = args.profile or ADHOC_DEFAULT_PROFILE
        other = [name for name in adhoc_profiles() if name != profile]
        print(f"adhoc runs, profile {profile}: {adhoc_profiles()[profile]['summary']}"
              + (f" (other profiles: --profile {' | '.join(other)})" if other else ""))
    requested = {"suite": suite.name, "profile": profile, "set": args.set, "argv": sys.argv[1:]}
    pending = [s for s in specs if not store.has(s.run_id)]
    complete = len(specs) - len(pending)
    # before any work: the folders take files, and every setting passes the checks that need files but no
    # training (model folders, tokenizers: answer tokens, prompt templates; bench.runner.preflight)
    if pending:
        from bench.runner import preflight

        preflight(pending, args.cache)
    if pending or (not args.no_table and suite.name != "adhoc"):
        check_folder(args.results, "results", "--results")
    if pending:
        check_folder(args.cache, "cache", "--cache")
    if specs and complete == len(specs):
        print(f"{suite.name}: all {len(specs)} runs already complete in {args.results} (stored records); "
              f"nothing to train. `bench verify --suite {suite.name}` reruns a sample and compares it with "
              f"them; `--results DIR` runs the suite from scratch into DIR.")
    else:
        print(f"{suite.name}: {len(specs)} runs ({complete} already complete)")
    summary = run_specs(specs, store, args.cache, options, args.workers, requested,
                        executor=args.executor, ray_address=args.ray_address, cpus_per_task=args.cpus_per_task)
    print(f"done {summary['done']}, skipped {summary['skipped']}, failed {len(summary['failed'])}")
    from bench.report.run_summary import answer

    shown = answer(store, [s.run_id for s in specs], args.results)
    if shown:
        print(shown)
    if summary["failed"]:  # each failure was printed as it happened, with its log
        print(f"failed: {', '.join(summary['failed'])}; rerun to retry them (finished runs are skipped)",
              file=sys.stderr)
    if not args.no_table and suite.name != "adhoc":
        written = write_tables(suite, table_specs, store, args.results)
        print(f"tables regenerated from the records: {len(written)} files under {args.results / suite.name}")
        for path in written.values():
            print(f"wrote {path}")
    return 1 if summary["failed"] else 0


def _cmd_table(args) -> int:

    chosen = [flag for flag in ("suite", "runs", "last") if getattr(args, flag) is not None]
    if len(chosen) != 1:
        raise BenchError("bench table: give one of --suite NAME, --runs ID[,ID...] or --last N"
                         + (f" (got --{' and --'.join(chosen)})" if chosen else ""))
    if args.suite is None:
        return _runs_table(args)
    return _suite_table(args)


def _runs_table(args) -> int:
    from bench.records import ResultStore
    from bench.report.run_summary import (
        compare_hint,
        latest_run_ids,
        render_runs,
        resolve_run_ids,
        runs_frame,
    )

    if not Path(args.results).is_dir():
        raise BenchError(f"--results {args.results}: no such folder")
    store = ResultStore(args.results)
    if args.last is not None:
        _check_count("--last", args.last, 10_000)
        run_ids = latest_run_ids(store, args.last)
    else:
        run_ids = resolve_run_ids(store, [part.strip() for part in args.runs.split(",") if part.strip()])
        if not run_ids:
            raise BenchError("--runs: empty; give run ids (or prefixes), comma-separated")
    if args.format == "latex":
        raise BenchError("--format latex is for suite tables; --runs / --last print markdown or csv")
    frame = runs_frame(store, run_ids)
    print(render_runs(frame, args.format))
    if args.format == "markdown":
        print(compare_hint(frame, args.results))
    return 0


def _suite_table(args) -> int:
    from bench.records import ResultStore
    from bench.report.latex import parse_selection
    from bench.report.tables import write_tables
    from bench.spec import expand, load_suite

    suite = load_suite(args.suite, args.profile)
    specs = expand(suite)
    # every option checked before any record is read or any file written
    selection = parse_selection(specs, args.metrics, args.columns, args.latex_width)
    if args.render:
        from bench.report.latex_render import check_tools

        check_tools()
    check_folder(args.out or args.results, "tables", "--out" if args.out else "--results")
    written = write_tables(suite, specs, ResultStore(args.results), args.out or args.results,
                           correction=args.correction, latex=selection)
    if not written:
        raise BenchError(f"no run records of suite {suite.name!r} under {args.results}; run it first: "
                         f"python -m bench run --suite {args.suite}" + (f" --profile {args.profile}" if args.profile else ""))
    ext = {"markdown": "md", "latex": "tex", "csv": "csv"}[args.format]
    for name in ("main", "segments", "significance"):
        for suffix in ("", "_column") if ext == "tex" else ("",):
            if f"{name}{suffix}.{ext}" in written:
                print(written[f"{name}{suffix}.{ext}"].read_text())
    if args.render:
        from bench.report.latex_render import compile_table, describe

        for name, path in written.items():
            if name.endswith(".tex"):
                print(describe(compile_table(path)))
    return 0


def _cmd_compare(args) -> int:
    from bench.records import ResultStore
    from bench.report.compare import DEFAULT_METRICS, compare_report
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
    from bench.records import ResultStore, atomic_write_text
    from bench.report.claims import check_claims, load_claims, render_claims

    store = ResultStore(args.results)
    claims = load_claims(args.file)
    out = args.out or Path(args.results) / "claims.md"
    check_folder(Path(out).parent, "claims report", "--out" if args.out else "--results")
    report = render_claims(check_claims(store, claims, args.correction), claims, args.correction, store)
    print(report)
    atomic_write_text(out, "# Claims checked against the stored runs\n\nGenerated by `python -m bench claims`; "
                      "nothing here is hand-edited.\n\n" + report)
    print(f"wrote {out}")
    return 0  # a failing or missing claim is a finding, not an error


def _cmd_verify(args) -> int:
    from bench.verify import render_record_check, render_verification, verify_records, verify_suite

    if args.records:
        report = verify_records(args.results)
        print(render_record_check(report))
        return 1 if report["bad"] else 0
    if not args.suite:
        raise BenchError("bench verify: give --suite SUITE (rerun and compare a sample of its stored runs) or "
                         "--records (check every stored record, no rerun)")
    _check_count("--workers", args.workers, MAX_WORKERS)
    if not args.all:
        _check_count("--sample", args.sample)
    options = _run_options(args)
    if args.scratch is not None:
        check_folder(args.scratch, "scratch", "--scratch")
    check_folder(args.cache, "cache", "--cache")
    report = verify_suite(args.suite, args.profile, args.results, args.cache, options,
                          sample=None if args.all else args.sample, seed=args.seed, scratch=args.scratch,
                          workers=args.workers, keep=args.keep)
    print(render_verification(report))
    return 0 if all(row["identical"] for row in report["runs"]) else 1


def _cmd_figures(args) -> int:
    from bench.records import ResultStore
    from bench.report.figures import FIGURES, write_figures

    which = args.only or list(FIGURES)
    for name in which:
        if name not in FIGURES:
            raise UnknownChoiceError("figure", name, FIGURES)
    out = args.out or Path(args.results) / "figures"
    check_folder(out, "figures", "--out" if args.out else "--results")
    written = write_figures(ResultStore(args.results), out, args.cache, which, args.metric)
    if "tuning" in which:  # one optimisation-history figure per suite with `bench tune` studies
        from bench.report.tuning_figures import tuning_history_figures

        written += tuning_history_figures(Path(args.results), out)
    for path in written:
        print(f"wrote {path}")
    return 0


def _cmd_view(args) -> int:
    from bench.view import build_site, check_inputs

    out = args.out or Path(args.results) / "site"
    suites = [name for group in args.suite or [] for names in group for name in names.split(",") if name] or None
    check_inputs(args.results, out, suites)  # before the site folder is created
    check_folder(out, "site", "--out" if args.out else "--results")
    index = build_site(args.results, out, suites)
    print(f"site written: {index.resolve().as_uri()}")
    return 0


def _check_yaml_values(args) -> None:
    """Every --set / --option value parses as YAML (else one line naming it, not the parser's traceback)."""
    import yaml

    for flag in ("set", "option"):
        for pair in getattr(args, flag, None) or []:
            key, sep, value = pair.partition("=")
            if not sep:
                continue  # the command's own check names a pair without '='
            try:
                yaml.safe_load(value)
            except yaml.YAMLError as exc:
                problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
                mark = getattr(exc, "problem_mark", None)
                where = f" at column {mark.column + 1}" if mark is not None else ""
                raise BenchError(f"--{flag} {key}={value!r}: not a valid value ({problem}{where}); text with "
                                 f"[ ] {{ }} : # , or quotes is quoted: --{flag} '{key}=\"...\"'") from None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        _check_yaml_values(args)
        if args.command == "data":
            from bench.data.own import cmd_add, cmd_check

            return {"check": cmd_check, "add": cmd_add}[args.data_command](args)
        if args.command == "list":
            return _cmd_list()
        if args.command == "run":
            return _cmd_run(args)
        if args.command == "tune":
            from bench.tuning import command

            return command(args)
        if args.command in ("compare", "claims", "figures", "verify", "view"):
            return {"compare": _cmd_compare, "claims": _cmd_claims, "figures": _cmd_figures,
                    "verify": _cmd_verify, "view": _cmd_view}[args.command](args)
        return _cmd_table(args)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a folder that became unwritable or full mid-way: one line, not a traceback
        if exc.errno not in FOLDER_ERRNOS:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"bench: error: {where}{exc.strerror or exc} (check that the folder is writable and its disk has "
              f"room)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted; completed runs are saved, rerun to resume", file=sys.stderr)
        return 130
