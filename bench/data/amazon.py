"""Amazon review data, 2018 and 2023 releases: JSON-lines files streamed line by line (gzip or plain).

2018 (McAuley lab): reviews `reviews_<Category>.json.gz`, `<Category>.json.gz` or 5-core
`<Category>_5.json.gz` (reviewerID, asin, overall, unixReviewTime) and metadata `meta_<Category>.json.gz`
(asin, title, brand, categories/category, description); some 2014-era metadata files hold Python-literal
dicts, not JSON.
2023: reviews `<Category>.jsonl(.gz)` (user_id, parent_asin, rating, timestamp in milliseconds) and metadata
`meta_<Category>.jsonl(.gz)` (parent_asin, title, main_category, categories, store, description, features).
Timestamps come out in seconds for both releases. The metadata file is optional (item text is): without one (no
`meta_path`, none next to the reviews) every item gets the placeholder text.
"""

from __future__ import annotations

import ast
import gzip
import json
import zlib
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from bench.errors import DataFileError

# release -> (user key, item key, rating key, time key, time divisor to seconds)
REVIEW_KEYS = {
    "amazon2018": ("reviewerID", "asin", "overall", "unixReviewTime", 1.0),
    "amazon2023": ("user_id", "parent_asin", "rating", "timestamp", 1000.0),
}
META_ID = {"amazon2018": "asin", "amazon2023": "parent_asin"}
ALIASES = {"categories": ("categories", "category"), "category": ("category", "categories")}
SUFFIXES = (".json.gz", ".jsonl.gz", ".json", ".jsonl")


def category_of(filename: str) -> str:
    """`reviews_Beauty.json.gz`, `Beauty_5.json.gz`, `Beauty.jsonl` -> `Beauty`."""
    stem = filename
    for suffix in SUFFIXES:
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    stem = stem.removeprefix("reviews_")
    return stem.removesuffix("_5")


def meta_names(reviews: Path) -> list[str]:
    """The metadata file names looked for next to a reviews file: `meta_<Category>.json(l)(.gz)`."""
    return [f"meta_{category_of(reviews.name)}{suffix}" for suffix in SUFFIXES]


def locate(path: str, meta_path: str | None) -> tuple[Path, Path | None]:
    """The reviews file and its metadata file: `meta_path` (must exist), else `meta_<Category>.json(l)(.gz)` next
    to the reviews, else None (item text is optional: every item gets the placeholder text)."""
    reviews = Path(path).expanduser()
    if not reviews.is_file():
        raise DataFileError(reviews, "reviews file not found")
    if meta_path is not None:
        meta = Path(meta_path).expanduser()
        if not meta.is_file():
            raise DataFileError(meta, "metadata file (meta_path) not found")
        return reviews, meta
    for name in meta_names(reviews):
        if (reviews.parent / name).is_file():
            return reviews, reviews.parent / name
    return reviews, None


def iter_json_lines(path: Path, literal_fallback: bool = False) -> Iterator[tuple[int, dict]]:
    """(1-based line number, object) per non-empty line; Python-literal dicts too if `literal_fallback`."""
    with open(path, "rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    opener = gzip.open if gzipped else open
    line_no = 0
    try:
        with opener(path, "rb") as handle:  # decoded line by line: a byte that is not UTF-8 names its line
            for line_no, raw in enumerate(tqdm(handle, desc=path.name, unit=" lines", mininterval=1.0,
                                               disable=None), start=1):
                try:
                    line = raw.decode("utf-8").strip()
                except UnicodeDecodeError as exc:
                    raise DataFileError(path, f"not UTF-8 text at column {exc.start + 1} (byte "
                                              f"0x{raw[exc.start]:02x}); save it as UTF-8", line=line_no) from None
                if not line:
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    if not literal_fallback:
                        raise DataFileError(path, f"not valid JSON: {exc.msg}", line=line_no) from exc
                    try:
                        obj = ast.literal_eval(line)
                    except (ValueError, SyntaxError, MemoryError, RecursionError) as exc2:
                        raise DataFileError(path, f"neither JSON nor a Python literal: {exc.msg}",
                                            line=line_no) from exc2
                if not isinstance(obj, dict):
                    raise DataFileError(path, f"expected one object per line, got {type(obj).__name__}",
                                        line=line_no)
                yield line_no, obj
    except (OSError, EOFError, UnicodeDecodeError, zlib.error) as exc:
        raise DataFileError(path, f"cannot read: {exc}", line=line_no + 1) from exc


def read_reviews(path: Path, release: str) -> pd.DataFrame:
    """Interactions (user, item, rating, timestamp in seconds) from a reviews file."""
    user_key, item_key, rating_key, time_key, divisor = REVIEW_KEYS[release]
    users, items, ratings, times = [], [], [], []
    for line_no, obj in iter_json_lines(path):
        for key in (user_key, item_key, rating_key, time_key):
            if obj.get(key) is None:
                raise DataFileError(path, f"missing key; keys present: {', '.join(sorted(obj))}", column=key,
                                    line=line_no)
        users.append(str(obj[user_key]))
        items.append(str(obj[item_key]))
        ratings.append(_number(obj[rating_key], path, rating_key, line_no))
        times.append(_number(obj[time_key], path, time_key, line_no) / divisor)
    return pd.DataFrame({"user": pd.Series(users, dtype=str), "item": pd.Series(items, dtype=str),
                         "rating": pd.Series(ratings, dtype="float64"),
                         "timestamp": pd.Series(times, dtype="float64")})


def read_meta(path: Path | None, release: str, needed: set[str], columns: list[str]) -> pd.DataFrame:
    """Metadata rows (first occurrence) of the `needed` items, indexed by item id; absent keys -> None (no
    metadata file, `path` None: no rows)."""
    id_key = META_ID[release]
    rows: dict[str, list] = {}
    if path is None:
        return pd.DataFrame([], index=pd.Index([], dtype=str), columns=columns, dtype=object)
    for line_no, obj in iter_json_lines(path, literal_fallback=True):
        item = obj.get(id_key)
        if item is None:
            raise DataFileError(path, "missing item id", column=id_key, line=line_no)
        item = str(item)
        if item in needed and item not in rows:
            rows[item] = [_field(obj, column) for column in columns]
            if len(rows) == len(needed):
                break
    return pd.DataFrame(list(rows.values()), index=pd.Index(list(rows), dtype=str), columns=columns,
                        dtype=object)


def _field(obj: dict, column: str):
    for key in ALIASES.get(column, (column,)):
        if obj.get(key) not in (None, "", []):
            return obj[key]
    return None


def _number(value, path: Path, column: str, line_no: int) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataFileError(path, f"non-numeric value {value!r}", column=column, line=line_no) from None
