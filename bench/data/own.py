"""Own data: a data folder or file as a data set, `bench data check` and `bench data add`.

`detect(path)` reads only file names and header lines and returns the card settings a path runs with (`--dataset
PATH`, no filters): RecBole atomic files (a folder or `.inter` file, an optional `.item` next to it), CSV / TSV with
a header naming the columns (the user, item, rating and timestamp columns found by their common names,
`cards.CSV_COLUMNS`, or named with `columns`; a folder with an interaction CSV and an items CSV takes both), or
Amazon reviews as JSON lines (2018 or 2023 by their keys; `meta_<Category>...` next to them, when there, gives the
item text). `describe(card)` prepares the data set without caching and counts every stage (read, rating filter,
k-core, final); `check_item_text` is the pre-flight that refuses a method needing item text on a data set without.
User cards live in `cards.user_card_dir()` ($BENCH_CARDS, default `cards/` in the working folder), found by
`--dataset NAME` after the builtins.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from bench.data import amazon
from bench.data.cards import (
    CARD_NAMES,
    CSV_COLUMNS,
    CSV_SUFFIXES,
    DatasetCard,
    _open_text,
    csv_header,
    csv_roles,
    item_text_source,
    load_card,
    prepare_dataset,
    resolve_dataset,
    user_card_dir,
)
from bench.errors import BenchError, DataFileError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
DATA_SUFFIXES = (".inter", *CSV_SUFFIXES, *amazon.SUFFIXES)
TITLE_COLUMNS = ("title", "movie_title", "name", "item_name", "product_title", "product_name", "book_title")
FORMATS = {"atomic": "RecBole atomic files", "csv": "CSV with named columns",
           "amazon2018": "Amazon reviews (2018 release, JSON lines)",
           "amazon2023": "Amazon reviews (2023 release, JSON lines)",
           "ml-100k": "MovieLens 100K files", "ml-1m": "MovieLens 1M files"}
MIN_ITEMS = 20  # max(bench.eval.ranking.KS): RecBole's validation ranks the top 20, a smaller catalogue fails
KNOWN = (".inter (RecBole atomic, an optional .item next to it), .csv / .tsv / .txt (a header naming the columns), "
         ".json / .jsonl (Amazon reviews), each also .gz")


# ------------------------------------------------------------------------------------------- detection
def data_name(path: Path) -> str:
    """The name a data folder or file runs under: the folder's name, or the file's without its data suffixes."""
    stem = path.name
    for suffix in sorted(DATA_SUFFIXES, key=len, reverse=True):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-._") or "data"


def parse_columns(text: str | None) -> dict[str, str]:
    """`user=uid,item=sku` -> {"user": "uid", "item": "sku"}; BenchError naming the roles otherwise."""
    out: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        role, sep, column = part.partition("=")
        if not sep or role.strip() not in CSV_COLUMNS or not column.strip():
            raise BenchError(f"--columns {text!r}: expected ROLE=COLUMN pairs, comma-separated, ROLE one of "
                             f"{', '.join(CSV_COLUMNS)}")
        out[role.strip()] = column.strip()
    return out


def detect(path: Path, columns: dict[str, str] | None = None) -> dict[str, Any]:
    """The card settings of a data folder or file (no filters; absolute paths). DataFileError / BenchError, one
    line naming the path and what was found, for anything that is not a data set."""
    path = Path(path).expanduser().absolute()
    if path.is_dir():
        raw = _scan_folder(path, columns or {})
    elif path.is_file():
        raw = _classify_file(path, columns or {})
    else:
        raise DataFileError(path, "no such file or folder")
    if columns and raw["loader"] != "csv":
        raise BenchError(f"--columns {columns}: names the columns of a CSV file; {path} is {FORMATS[raw['loader']]}")
    return {"name": data_name(path), **raw}


def _scan_folder(folder: Path, columns: dict[str, str]) -> dict[str, Any]:
    files = sorted(p for p in folder.iterdir() if p.is_file())
    candidates = [p for p in files if p.stat().st_size > 0]  # an empty file is no data file
    inter = [p for p in candidates if p.name.endswith(".inter")]
    if inter:
        if len(inter) > 1 and not (folder / f"{folder.name}.inter").is_file():
            raise DataFileError(folder, f"{len(inter)} .inter files ({', '.join(p.name for p in inter[:10])}); give "
                                        f"one of them: --dataset {folder / inter[0].name}")
        main = folder / f"{folder.name}.inter" if (folder / f"{folder.name}.inter").is_file() else inter[0]
        return {"loader": "atomic", "path": str(folder), **_atomic_text(main.with_suffix(".item"))}
    # in a folder, .txt files are notes more often than data: only .csv / .tsv (a .txt file is read when named)
    csvs = [p for p in candidates if p.name.lower().endswith(tuple(x for x in CSV_SUFFIXES if ".txt" not in x))]
    if csvs:
        kinds = {p: _csv_kind(p, columns) for p in csvs}
        interactions = [p for p, kind in kinds.items() if kind == "interactions"]
        if len(interactions) != 1:
            found = "; ".join(f"{p.name}: {', '.join(csv_header(p)[0][:12])}" for p in csvs[:5])
            what = "no CSV file with a user and an item column" if not interactions else (
                f"{len(interactions)} CSV files with a user and an item column ({', '.join(p.name for p in interactions)})")
            raise DataFileError(folder, f"{what}; columns found: {found}; give the interaction file (and --columns "
                                        f"user=COLUMN,item=COLUMN if its columns have other names)")
        items = [p for p, kind in kinds.items() if kind == "items"]
        return _csv_card(interactions[0], items[0] if len(items) == 1 else None, columns)
    reviews = [p for p in candidates if p.name.endswith(amazon.SUFFIXES) and not p.name.startswith("meta_")]
    if len(reviews) == 1:
        return _classify_file(reviews[0], columns)
    if reviews:
        raise DataFileError(folder, f"{len(reviews)} JSON lines files ({', '.join(p.name for p in reviews[:10])}); "
                                    f"give one of them")
    names = ", ".join(p.name for p in files[:10]) + (f" and {len(files) - 10} more" if len(files) > 10 else "")
    raise DataFileError(folder, f"a folder with no data file (looked for {KNOWN}); it holds: {names or 'nothing'}")


def _classify_file(path: Path, columns: dict[str, str]) -> dict[str, Any]:
    lower = path.name.lower()
    if path.stat().st_size == 0:
        raise DataFileError(path, "empty file")
    if lower.endswith(".inter"):
        return {"loader": "atomic", "path": str(path), **_atomic_text(path.with_suffix(".item"))}
    if lower.endswith(".item"):
        raise DataFileError(path, f"an item file: give the interaction file ({path.with_suffix('.inter').name}) "
                                  "or the folder holding both")
    if lower.endswith(CSV_SUFFIXES):
        return _csv_card(path, None, columns)
    if lower.endswith(amazon.SUFFIXES):
        if path.name.startswith("meta_"):
            raise DataFileError(path, "Amazon item metadata: give the reviews file next to it (it is found by name)")
        return {"loader": _amazon_release(path), "path": str(path)}
    raise DataFileError(path, f"not a data file bench reads (by its name); known: {KNOWN}")


def _atomic_text(item: Path) -> dict[str, Any]:
    """The text settings of an atomic data set: the item file's title column (common names, else its first text
    column); none without an item file or such a column (placeholders)."""
    if not item.is_file():
        return {}
    with _open_text(item) as handle:
        raw = handle.readline()
    try:
        header = raw.decode("utf-8").rstrip("\r\n").split("\t")
    except UnicodeDecodeError as exc:
        raise DataFileError(item, f"not UTF-8 text at column {exc.start + 1} (byte 0x{raw[exc.start]:02x}); save "
                                  "it as UTF-8", line=1) from None
    typed = {c.partition(":")[0]: c.partition(":")[2] for c in header}
    names = [c for c in typed if c != "item_id"]
    title = _title_column(names) or next((c for c in names if typed[c] == "token_seq"), None)
    return {"text_template": "{title}", "text_fields": {"title": title}} if title else {}


def _title_column(names: list[str]) -> str | None:
    lower = {n.lower(): n for n in reversed(names)}
    return next((lower[t] for t in TITLE_COLUMNS if t in lower), None)


def _csv_kind(path: Path, columns: dict[str, str]) -> str:
    header = csv_header(path)[0]
    probe = DatasetCard(name="probe", loader="csv", path=str(path))
    lower = {c.lower() for c in header}
    try:
        csv_roles(probe.model_copy(update={"columns": columns}), path, header)
        return "interactions"
    except DataFileError:
        return "items" if any(n.lower() in lower for n in CSV_COLUMNS["item"]) else "other"


def _csv_card(path: Path, items: Path | None, columns: dict[str, str]) -> dict[str, Any]:
    header = csv_header(path)[0]
    probe = DatasetCard(name="probe", loader="csv", path=str(path), columns=columns)
    roles = csv_roles(probe, path, header)
    raw: dict[str, Any] = {"loader": "csv", "path": str(path)}
    if items is not None:
        raw["meta_path"] = str(items)
    raw["columns"] = roles
    text_columns = [c for c in header if c not in roles.values()] + (csv_header(items)[0] if items else [])
    title = _title_column(text_columns)
    if title:
        raw.update({"text_template": "{title}", "text_fields": {"title": title}})
    return raw


def _amazon_release(path: Path) -> str:
    """amazon2018 or amazon2023, by the keys of the file's first JSON object."""
    line_no, raw = 0, b""
    with _open_text(path) as handle:
        for line_no, raw in enumerate(handle, start=1):  # noqa: B007 (the first non-empty line)
            if raw.strip():
                break
    if not raw.strip():
        raise DataFileError(path, "no JSON object in it (an empty file?)")
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DataFileError(path, f"not UTF-8 text at column {exc.start + 1} (byte 0x{raw[exc.start]:02x}); save it "
                                  "as UTF-8", line=line_no) from None
    except json.JSONDecodeError as exc:
        raise DataFileError(path, f"not JSON lines: {exc.msg}", line=line_no) from None
    if not isinstance(obj, dict):
        raise DataFileError(path, f"expected one JSON object per line, got {type(obj).__name__}", line=line_no)
    for release, (user, item, *_rest) in amazon.REVIEW_KEYS.items():
        if user in obj and item in obj:
            return release
    wanted = "; ".join(f"{r}: {', '.join(k[:4])}" for r, k in amazon.REVIEW_KEYS.items())
    raise DataFileError(path, f"JSON lines with keys {', '.join(sorted(obj))}: not Amazon reviews ({wanted}); "
                              "other JSON data: convert it to CSV with named columns", line=line_no)


# ------------------------------------------------------------------------------------------- cards
def card_for(path: str, columns: dict[str, str] | None = None, name: str | None = None,
             min_rating: float | None = None, kcore: int | None = None) -> DatasetCard:
    """The card of a data folder or file (detected), a card file or a card name, with a new name and filters."""
    overrides: dict[str, Any] = {}
    if columns:
        overrides["columns"] = columns
    if name is not None:
        if not NAME.match(name) or name.endswith((".yaml", ".yml")):
            raise BenchError(f"--name {name!r}: a data set name is letters, digits, '_', '.', '-', starting with a "
                             "letter or digit")
        if name in CARD_NAMES:
            raise BenchError(f"--name {name!r}: a builtin data set's name; choose another")
        overrides["name"] = name
    if min_rating is not None:
        overrides["min_rating"] = min_rating
    if kcore is not None:
        overrides["kcore"] = kcore
    return load_card(path, overrides)


def card_yaml(card: DatasetCard) -> str:
    """The card as YAML: its name, loader, path and every setting that is not at its default."""
    data = card.model_dump(mode="json")
    defaults = {k: f.get_default(call_default_factory=True) for k, f in DatasetCard.model_fields.items()}
    defaults = {k: (list(v) if isinstance(v, tuple) else v) for k, v in defaults.items()}
    keep = {k: v for k, v in data.items() if k in ("name", "loader", "path", "text_template") or v != defaults[k]}
    return yaml.safe_dump(keep, sort_keys=False, allow_unicode=True, default_flow_style=False)


# ------------------------------------------------------------------------------------------- describe
STAGES = {"raw": "read", "min_rating": "rating >= {min_rating:g}", "kcore": "{kcore}-core",
          "missing_text_drop": "items with text", "final": "final"}


def _stage_row(frame: pd.DataFrame) -> dict[str, Any]:
    if frame.empty:
        return {"interactions": 0, "users": 0, "items": 0, "ratings": "-", "time": "-"}
    low, high = float(frame["rating"].min()), float(frame["rating"].max())
    first, last = float(frame["timestamp"].min()), float(frame["timestamp"].max())
    return {"interactions": len(frame), "users": int(frame["user"].nunique()), "items": int(frame["item"].nunique()),
            "ratings": f"{low:g} .. {high:g}", "time": _span(first, last)}


def _span(first: float, last: float) -> str:
    if 1e8 <= first and last < 1e11:  # seconds since 1970: 1973 .. 5138
        def day(t):
            return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d")

        days = (last - first) / 86400
        return f"{day(first)} .. {day(last)} ({days:.0f} days)" if days >= 1 else \
            f"{day(first)} ({(last - first) / 3600:.1f} h)"
    return f"{first:g} .. {last:g}"


def describe(card: DatasetCard) -> dict[str, Any]:
    """The card's data set prepared (not cached) and described: per stage counts, rating range and time span; the
    item text (how many items have it, where from, an example); the content hash; the seconds it took."""
    start = time.perf_counter()
    stages: dict[str, dict[str, Any]] = {}
    try:
        dataset = prepare_dataset(card, observe=lambda stage, frame: stages.__setitem__(stage, _stage_row(frame)))
    except BenchError:
        if stages:  # the counts up to the stage that emptied it, then the one-line error
            print(render_counts(card, stages))
        raise
    source, why = item_text_source(card)
    missing = dataset.meta["missing_text"]
    n_items = len(dataset.item_text)
    with_text = n_items - int(missing.get("count", 0)) if source is not None else 0
    example = next((t for i, t in dataset.item_text.items() if i not in set(missing.get("first_ids", []))), "")
    return {"card": card, "dataset": dataset, "stages": stages, "text_source": source, "no_text_reason": why,
            "items_with_text": with_text, "items": n_items, "example": example if with_text else "",
            "seconds": time.perf_counter() - start}


def no_text_methods() -> list[str]:
    """The methods that run on a data set without item text."""
    from bench.catalog import METHODS

    return [name for name in METHODS.names() if not getattr(METHODS.get(name), "needs_item_text", False)]


def render_counts(card: DatasetCard, stages: dict[str, dict[str, Any]]) -> str:
    """The counts per stage as an aligned text table."""
    labels = {k: v.format(min_rating=card.min_rating or 0, kcore=card.kcore) for k, v in STAGES.items()}
    rows = [(labels[k], v) for k, v in stages.items()]
    widths = {c: max(len(c), *(len(str(r[c])) for _, r in rows)) for c in ("interactions", "users", "items",
                                                                             "ratings")}
    label_width = max(len(label) for label, _ in rows)
    lines = ["counts:", "  " + " " * label_width + "  " + "  ".join(c.rjust(w) for c, w in widths.items()) + "  time"]
    for label, row in rows:
        lines.append("  " + label.ljust(label_width) + "  " + "  ".join(str(row[c]).rjust(w) for c, w in widths.items())
                     + f"  {row['time']}")
    return "\n".join(lines)


def render(report: dict[str, Any], shown_path: str) -> str:
    card, dataset = report["card"], report["dataset"]
    files = [Path(p) for p in dataset.meta["sources"]]
    lines = [f"{shown_path}: {FORMATS.get(card.loader, card.loader)}: {', '.join(p.name for p in files)}"]
    lines.append("card:")
    lines += ["  " + line for line in card_yaml(card).rstrip().splitlines()]
    lines.append(render_counts(card, report["stages"]))

    if report["text_source"] is not None and report["items_with_text"]:
        lines.append(f"item text: {report['items_with_text']} of {report['items']} items, from "
                     f"{Path(report['text_source']).name} (template {card.text_template!r}), e.g. {report['example']!r}"
                     + ("" if report["items_with_text"] == report["items"] else "; the others get 'item <id>'"))
        lines.append("methods: every method can run on it")
    else:
        why = report["no_text_reason"] or "every item's text is empty"
        lines.append(f"item text: none ({why}); every item gets the placeholder 'item <id>'")
        lines.append(f"methods: those that need item text refuse this data set; these run on it: "
                     f"{', '.join(no_text_methods())}")
    final = report["stages"].get("final", {})
    if final.get("items", MIN_ITEMS) < MIN_ITEMS:
        lines.append(f"warning: {final['items']} items after the filters; the ranking metrics go to @{MIN_ITEMS} "
                     f"and the RecBole backbones validate on the top {MIN_ITEMS}: a ranking run needs at least "
                     f"{MIN_ITEMS} items")
    lines.append(f"content hash: {dataset.content_hash[:16]} (records name this data set {card.name!r} and keep the "
                 "full hash)")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- commands
def cmd_check(args) -> int:
    """`bench data check PATH`: the card a path would run with, its counts per stage, its item text."""
    card = card_for(args.path, parse_columns(args.columns), args.name, args.min_rating, args.kcore)
    report = describe(card)
    print(render(report, args.path))
    if args.card_out:
        out = Path(args.card_out)
        _write_card(out, card, args.path, force=True)
        print(f"wrote {out}")
    elif Path(args.path).expanduser().exists() and not args.path.endswith((".yaml", ".yml")):
        print(f"next: python -m bench data add {args.path} --name {card.name}   (or run it as it is: python -m bench "
              f"run --dataset {args.path} --split temporal_loo --backbone lightgcn --method random)")
    else:
        print(f"run it: python -m bench run --dataset {args.path} --split temporal_loo --backbone lightgcn --method "
              "random")
    print(f"({report['seconds']:.2f} s)")
    return 0


def cmd_add(args) -> int:
    """`bench data add PATH --name NAME`: check the data, then write the user card NAME.yaml."""
    folder = Path(args.cards).expanduser() if args.cards else user_card_dir()
    name = args.name
    card = card_for(args.path, parse_columns(args.columns), name, args.min_rating, args.kcore)
    target = folder / f"{card.name}.yaml"
    if target.exists() and not args.force:
        raise BenchError(f"card {target} exists; --force replaces it (or choose another --name)")
    report = describe(card)
    print(render(report, args.path))
    _write_card(target, card, args.path, force=args.force)
    print(f"wrote {target}")
    where = "" if folder.resolve() == user_card_dir().resolve() else f"BENCH_CARDS={folder} "
    print(f"run it: {where}python -m bench run --dataset {card.name} --split temporal_loo --backbone lightgcn "
          f"--method random")
    return 0


def _write_card(target: Path, card: DatasetCard, source: str, force: bool) -> None:
    from bench.records import atomic_write_text

    if target.exists() and target.is_dir():
        raise BenchError(f"{target}: a folder, not a card file")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d")
        atomic_write_text(target, f"# written by `bench data add` / `bench data check` on {stamp} from {source}\n"
                          + card_yaml(card))
    except OSError as exc:
        raise BenchError(f"{target}: cannot write the card ({exc.strerror or exc})") from None


# ------------------------------------------------------------------------------------------- pre-flight
def check_item_text(method: str, needs_text: bool, card: DatasetCard, dataset=None) -> None:
    """Pre-flight: a method that needs item text on a data set without is a BenchError (one line naming both),
    before any work: from the card's files (no item file or no text column), or, given the prepared `dataset`,
    when no item has text of its own."""
    if not needs_text:
        return
    if dataset is None:
        source, why = item_text_source(card)
    else:
        missing = int((dataset.meta.get("missing_text") or {}).get("count", 0))
        source, why = (None, "no item has text") if missing and missing >= len(dataset.item_text) else ("", "")
    if source is None:
        raise BenchError(f"method {method!r} needs item text, and data set {card.name!r} has none ({why}); run "
                         f"methods that need none ({', '.join(no_text_methods())}) or add item text "
                         f"({_text_hint(card)})")


def _text_hint(card: DatasetCard) -> str:
    if card.loader == "csv":
        return "a title column in the CSV, or meta_path: an items CSV with the item column and a title column"
    if card.loader.startswith("amazon"):
        return "the meta_<Category> file next to the reviews, or meta_path"
    return "a .item file next to the .inter file: item_id:token and a title column, e.g. title:token_seq"


__all__ = ["card_for", "card_yaml", "check_item_text", "cmd_add", "cmd_check", "describe", "detect", "parse_columns",
           "resolve_dataset"]
