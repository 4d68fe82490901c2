"""Own data (issue 27.4): `bench data check` / `bench data add`, `--dataset PATH | CARD | NAME`, runs named by their
data, item text optional (methods that need it refuse up front), one-line errors. Tiny data generated here."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from bench.cli import main

USERS, ITEMS, PER_USER = 20, 30, 8  # > 20 items: the ranking metrics go to @20


def interactions(seed: int = 0) -> pd.DataFrame:
    """USERS x PER_USER distinct items each, ratings 1..5, increasing timestamps (seconds in 2021)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(1, USERS + 1):
        for t, i in enumerate(rng.choice(np.arange(1, ITEMS + 1), size=PER_USER, replace=False)):
            rows.append((str(u), str(i), float(rng.integers(1, 6)), 1_609_459_200.0 + 3600 * (u * 10 + t)))
    return pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"])


def write_atomic(folder: Path, frame: pd.DataFrame, titles: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    lines += [f"{r.user}\t{r.item}\t{r.rating:g}\t{r.timestamp:.0f}" for r in frame.itertuples()]
    (folder / f"{folder.name}.inter").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if titles:
        items = ["item_id:token\tmovie_title:token_seq"] + [f"{i}\tFilm {i}" for i in range(1, ITEMS + 1)]
        (folder / f"{folder.name}.item").write_text("\n".join(items) + "\n", encoding="utf-8")
    return folder


def write_csv(path: Path, frame: pd.DataFrame, names=("userId", "movieId", "rating", "timestamp")) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    out = frame.rename(columns=dict(zip(("user", "item", "rating", "timestamp"), names)))
    out.to_csv(path, index=False)
    return path


def write_amazon(folder: Path, frame: pd.DataFrame, release: str = "amazon2018", meta: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if release == "amazon2018":
        rows = [{"reviewerID": f"A{r.user}", "asin": f"B{r.item}", "overall": r.rating,
                 "unixReviewTime": int(r.timestamp)} for r in frame.itertuples()]
        path, meta_rows = folder / "reviews_Toys_5.json.gz", [{"asin": f"B{i}", "title": f"Toy {i}"}
                                                              for i in range(1, ITEMS + 1)]
        meta_path = folder / "meta_Toys.json.gz"
    else:
        rows = [{"user_id": f"A{r.user}", "parent_asin": f"B{r.item}", "rating": r.rating,
                 "timestamp": int(r.timestamp * 1000)} for r in frame.itertuples()]
        path, meta_rows = folder / "Toys.jsonl", [{"parent_asin": f"B{i}", "title": f"Toy {i}"}
                                                  for i in range(1, ITEMS + 1)]
        meta_path = folder / "meta_Toys.jsonl"
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(row) + "\n" for row in rows))
    if meta:
        opener = gzip.open if meta_path.suffix == ".gz" else open
        with opener(meta_path, "wt", encoding="utf-8") as handle:
            handle.write("".join(json.dumps(row) + "\n" for row in meta_rows))
    return path


def make(kind: str, tmp_path: Path) -> tuple[Path, str, str | None]:
    """(path given to bench, loader detected, how item texts start / None without text) per format."""
    frame = interactions()
    if kind == "atomic":
        return write_atomic(tmp_path / "tiny", frame), "atomic", "Film "
    if kind == "atomic-no-item":
        return write_atomic(tmp_path / "tiny", frame, titles=False), "atomic", None
    if kind == "inter-file":
        return write_atomic(tmp_path / "tiny", frame) / "tiny.inter", "atomic", "Film "
    if kind == "csv":
        return write_csv(tmp_path / "tiny.csv", frame), "csv", None
    if kind == "csv-folder":  # ratings + an items CSV (MovieLens-latest layout)
        folder = tmp_path / "tiny"
        write_csv(folder / "ratings.csv", frame)
        pd.DataFrame({"movieId": range(1, ITEMS + 1), "title": [f"Film {i}, the" for i in range(1, ITEMS + 1)]}
                     ).to_csv(folder / "movies.csv", index=False)
        return folder, "csv", "Film "
    if kind == "tsv-dates":
        dated = frame.assign(timestamp=pd.to_datetime(frame["timestamp"], unit="s").dt.strftime("%Y-%m-%dT%H:%M:%S"))
        path = write_csv(tmp_path / "tiny.tsv", dated, names=("user_id", "item_id", "score", "time"))
        path.write_text(path.read_text().replace(",", "\t"))
        return path, "csv", None
    if kind == "amazon2018":
        return write_amazon(tmp_path / "tiny", frame).parent, "amazon2018", "Toy "  # the folder
    if kind == "amazon2023":
        return write_amazon(tmp_path / "tiny", frame, "amazon2023", meta=False), "amazon2023", None
    raise ValueError(kind)


FORMATS = ["atomic", "atomic-no-item", "inter-file", "csv", "csv-folder", "tsv-dates", "amazon2018", "amazon2023"]


def counts_table(out: str) -> dict[str, list[str]]:
    """The `counts:` rows of `bench data check`: label -> [interactions, users, items, ratings, ...]."""
    lines = out.split("counts:\n", 1)[1].splitlines()[1:]
    rows = {}
    for line in lines:
        if not line.startswith("  "):
            break
        match = re.match(r"\s+(.+?)\s{2,}(\d+)\s+(\d+)\s+(\d+)\s+(\S+ \.\. \S+)", line)
        rows[match.group(1)] = list(match.groups()[1:])
    return rows


def expected(frame: pd.DataFrame) -> list[str]:
    return [str(len(frame)), str(frame["user"].nunique()), str(frame["item"].nunique()),
            f"{frame['rating'].min():g} .. {frame['rating'].max():g}"]


@pytest.fixture(autouse=True)
def user_cards(tmp_path, monkeypatch) -> Path:
    """Every test's user card folder is its own (never the working folder's cards/)."""
    folder = tmp_path / "cards"
    monkeypatch.setenv("BENCH_CARDS", str(folder))
    return folder


# ------------------------------------------------------------------------------------------- data check
@pytest.mark.parametrize("kind", FORMATS)
def test_data_check_detects_the_format_and_counts_as_pandas(kind, tmp_path, capsys):
    from bench.data.cards import kcore_filter

    path, loader, text = make(kind, tmp_path)
    assert main(["data", "check", str(path), "--min-rating", "2", "--kcore", "3"]) == 0
    out = capsys.readouterr().out
    card = yaml.safe_load(out.split("card:\n", 1)[1].split("counts:", 1)[0])
    name = "Toys" if kind == "amazon2023" else "tiny"  # a folder's name, a file's stem
    assert card["loader"] == loader and card["name"] == name and card["kcore"] == 3
    frame = interactions()
    rated = frame[frame["rating"] >= 2]
    core, _ = kcore_filter(rated, 3)
    rows = counts_table(out)
    assert rows["read"][:4] == expected(frame)
    assert rows["rating >= 2"][:4] == expected(rated)
    assert rows["3-core"][:4] == expected(core) == rows["final"][:4]
    last = pd.Timestamp(frame["timestamp"].max(), unit="s").strftime("%Y-%m-%d")
    assert f"2021-01-01 .. {last}" in out.split("counts:", 1)[1].splitlines()[2]  # the time span, as dates
    if text is None:
        assert "item text: none (" in out and "these run on it: din, lightgcn-ctr, mf-ctr, random, sasrec-ctr" in out
    else:
        assert f"e.g. '{text}" in out and "every method can run on it" in out
    assert re.search(r"content hash: [0-9a-f]{16}", out)


def test_data_check_writes_the_card_and_names_csv_columns(tmp_path, capsys):
    from bench.data.cards import load_card

    frame = interactions()
    path = write_csv(tmp_path / "shop.csv", frame, names=("customer", "sku", "stars", "day"))
    assert main(["data", "check", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no user column" in err and "columns found: customer, sku, stars, day" in err
    card_file = tmp_path / "shop.yaml"
    assert main(["data", "check", str(path), "--columns", "user=customer,item=sku,rating=stars,timestamp=day",
                 "--card-out", str(card_file)]) == 0
    assert counts_table(capsys.readouterr().out)["read"][:4] == expected(frame)
    card = load_card(str(card_file))
    assert card.columns == {"user": "customer", "item": "sku", "rating": "stars", "timestamp": "day"}
    assert card.name == "shop" and card.path == str(path)


# ------------------------------------------------------------------------------------------- data add, --dataset
def test_data_add_writes_a_card_that_dataset_name_finds(tmp_path, user_cards, capsys):
    from bench.data.cards import load_card, resolve_dataset
    from bench.spec import adhoc_suite, expand

    path, _, _ = make("csv-folder", tmp_path)
    assert main(["data", "add", str(path), "--name", "films", "--kcore", "2"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {user_cards / 'films.yaml'}" in out and "--dataset films" in out
    card = load_card("films")
    assert (card.name, card.loader, card.kcore, card.text_fields) == ("films", "csv", 2, {"title": "title"})
    assert card.meta_path == str(path / "movies.csv")
    spec = expand(adhoc_suite(resolve_dataset("films"), "temporal_loo", "lightgcn", ["random"], 1, "minilm"))[0]
    assert spec.dataset == "films" and spec.dataset_settings["kcore"] == 2
    # listed by `bench list`, with how to use own data
    assert main(["list"]) == 0
    listing = capsys.readouterr().out
    assert "films" in listing and "--dataset PATH" in listing and "bench data add PATH --name NAME" in listing
    # an existing card is kept unless --force; a builtin name is refused
    assert main(["data", "add", str(path), "--name", "films"]) == 2
    assert "films.yaml exists; --force replaces it" in capsys.readouterr().err
    assert main(["data", "add", str(path), "--name", "films", "--force"]) == 0
    assert load_card("films").kcore == 0
    capsys.readouterr()
    assert main(["data", "add", str(path), "--name", "ml-100k"]) == 2
    assert "a builtin data set's name" in capsys.readouterr().err


def test_a_path_and_a_card_file_run_under_the_data_sets_name(tmp_path):
    from bench.data.cards import resolve_dataset
    from bench.spec import adhoc_suite, expand

    path, _, _ = make("atomic", tmp_path)
    card_file = tmp_path / "mine.yaml"
    card_file.write_text(f"name: mine\nloader: atomic\npath: {path}\nkcore: 2\n")
    for given, name in ((str(path), "tiny"), (str(card_file), "mine"), (str(path / "tiny.inter"), "tiny")):
        spec = expand(adhoc_suite(resolve_dataset(given), "temporal_loo", "lightgcn", ["random"], 1, "minilm"))[0]
        assert spec.dataset == name == spec.dataset_settings["name"] == spec.identity["dataset"]["name"]
        assert spec.label.startswith(f"{name}/")


def test_a_run_on_own_data_records_its_name_and_hash(tmp_path, capsys):
    from bench.data.cards import load_card, load_dataset

    path, _, _ = make("atomic-no-item", tmp_path)
    results, cache = tmp_path / "results", tmp_path / "cache"
    argv = ["run", "--dataset", str(path), "--split", "temporal_loo", "--backbone", "lightgcn", "--method", "random",
            "--seeds", "1", "--set", "backbone.epochs=1", "--option", "progress=false", "--results", str(results),
            "--cache", str(cache)]
    assert main(argv) == 0
    records = [json.loads(p.read_text()) for p in results.glob("runs/*/record.json")]
    assert len(records) == 1
    record = records[0]
    assert record["spec"]["dataset"] == "tiny" and record["identity"]["dataset"]["name"] == "tiny"
    assert "ml-100k" not in json.dumps({k: record[k] for k in ("spec", "identity")})
    assert record["provenance"]["dataset_hash"] == load_dataset(load_card(str(path))).content_hash
    assert record["provenance"]["missing_text"]["count"] == ITEMS  # no .item file: placeholders, and it ran
    assert "tiny" in capsys.readouterr().out


def test_item_text_is_optional_even_with_text_fields(tmp_path):
    """A card naming a title column on a folder without .item (KeyError 'movie_title' before): placeholders."""
    from bench.data.cards import DatasetCard, load_dataset

    folder = write_atomic(tmp_path / "bare", interactions(), titles=False)
    card = DatasetCard(name="bare", loader="atomic", path=str(folder), text_template="{title} ({year})",
                       text_fields={"title": "movie_title", "year": "release_year"})
    dataset = load_dataset(card)
    assert dataset.item_text["1"] == "item 1 ()" and dataset.meta["missing_text"]["count"] == ITEMS


# ------------------------------------------------------------------------------------------- up-front refusals
def _no_work(monkeypatch):
    import bench.executors

    monkeypatch.setattr(bench.executors, "run_specs", lambda *a, **k: pytest.fail("work started"))


def test_a_method_needing_text_is_refused_up_front(tmp_path, capsys, monkeypatch):
    _no_work(monkeypatch)
    path, _, _ = make("atomic-no-item", tmp_path)
    argv = ["run", "--dataset", str(path), "--split", "temporal_loo", "--backbone", "lightgcn", "--method",
            "random,llminit-var", "--results", str(tmp_path / "r"), "--cache", str(tmp_path / "c")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert "method 'llminit-var' needs item text, and data set 'tiny' has none (no tiny.item file" in err
    assert not (tmp_path / "r").exists() and not (tmp_path / "c").exists()


def test_a_data_set_whose_items_all_lack_text_is_refused_before_splits(tmp_path, capsys):
    from bench.errors import BenchError
    from bench.runner import prepare_shared
    from bench.spec import adhoc_suite, expand

    folder = write_atomic(tmp_path / "blank", interactions())
    (folder / "blank.item").write_text("item_id:token\tmovie_title:token_seq\n"
                                       + "".join(f"{i}\t\n" for i in range(1, ITEMS + 1)))
    specs = expand(adhoc_suite(str(folder), "temporal_loo", "lightgcn", ["llminit-var"], 1, "minilm"))
    with pytest.raises(BenchError, match="method 'llminit-var' needs item text, and data set 'blank' has none "
                                         r"\(no item has text\)"):
        prepare_shared(specs, tmp_path / "cache", "cpu", progress=False)
    assert not (tmp_path / "cache" / "splits").exists()


# ------------------------------------------------------------------------------------------- bad input: one line
def _bad_cases(tmp: Path) -> list[tuple[str, list[str], str]]:
    frame = interactions()
    nodata = tmp / "nodata"
    nodata.mkdir()
    (nodata / "README.md").write_text("notes\n")
    two = tmp / "two"
    write_atomic(two / "a", frame)
    for name in ("a.inter", "b.inter"):
        (two / name).write_text((two / "a" / "a.inter").read_text())
    builtin_named = write_atomic(tmp / "ml-100k", frame)
    (tmp / "empty.csv").write_text("")
    (tmp / "empty.inter").write_text("")
    (tmp / "latin.csv").write_bytes("user_id,item_id,title\n1,2,Caf\xe9\n".encode("latin-1"))
    shop = write_csv(tmp / "shop.csv", frame, names=("customer", "sku", "stars", "day"))
    other_json = tmp / "events.jsonl"
    other_json.write_text(json.dumps({"who": 1, "what": 2}) + "\n")
    amazon = write_amazon(tmp / "amz", frame)
    own = write_atomic(tmp / "own", frame)
    run = ["--split", "temporal_loo", "--backbone", "lightgcn", "--method", "random", "--results",
           str(tmp / "r"), "--cache", str(tmp / "c")]
    return [
        ("a folder with no data file", ["run", "--dataset", str(nodata), *run], "a folder with no data file"),
        ("a path that does not exist", ["run", "--dataset", str(tmp / "nowhere"), *run], "no such file or folder"),
        ("a folder with two .inter files", ["run", "--dataset", str(two), *run], "2 .inter files"),
        ("a data folder named as a builtin", ["run", "--dataset", str(builtin_named), *run],
         "a builtin data set's name"),
        ("--set value not valid YAML", ["run", "--dataset", "ml-100k", "--set", "dataset.path=[a", *run],
         "--set dataset.path='[a': not a valid value"),
        ("--set dataset.path of ml-100k at other files", ["run", "--dataset", "ml-100k", "--set",
                                                          f"dataset.path={own}", *run],
         "the builtin card's path takes a copy of its own files"),
        ("--set dataset.loader of ml-100k", ["run", "--dataset", "ml-100k", "--set", f"dataset.path={own}",
                                             "--set", "dataset.loader=atomic", *run],
         "setting loader='atomic': the builtin card reads the ml-100k files only"),
        ("CSV without a user column", ["data", "check", str(shop)], "no user column (looked for user_id"),
        ("--columns naming a column not there", ["data", "check", str(shop), "--columns", "user=nope,item=sku"],
         "no column 'nope'"),
        ("--columns not ROLE=COLUMN", ["data", "check", str(shop), "--columns", "buyer=customer"],
         "expected ROLE=COLUMN pairs"),
        ("empty CSV file", ["run", "--dataset", str(tmp / "empty.csv"), *run], "empty.csv: empty file"),
        ("empty .inter file", ["data", "check", str(tmp / "empty.inter")], "empty.inter: empty file"),
        ("CSV not UTF-8", ["data", "check", str(tmp / "latin.csv")], "line 2: not UTF-8 text at column 8 (byte 0xe9)"),
        ("JSON lines that are not Amazon reviews", ["data", "check", str(other_json)], "not Amazon reviews"),
        ("Amazon metadata given as the data", ["data", "check", str(amazon.parent / "meta_Toys.json.gz")],
         "Amazon item metadata: give the reviews file"),
        ("an .item file given as the data", ["data", "check", str(own / "own.item")], "an item file: give"),
        ("data add with a builtin name", ["data", "add", str(own), "--name", "ml-1m"], "a builtin data set's name"),
        ("data add with a name that is a path", ["data", "add", str(own), "--name", "../x"], "a data set name is"),
    ]


def test_bad_own_data_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    _no_work(monkeypatch)
    for name, argv, needle in _bad_cases(tmp_path):
        code = main(argv)
        err = capsys.readouterr().err.strip()
        assert code == 2, (name, code, err)
        assert err.count("\n") == 0 and err.startswith("bench: error: "), (name, err)
        assert needle in err, (name, err)
    assert not (tmp_path / "r").exists() and not (tmp_path / "c").exists()


def test_data_check_warns_about_a_catalogue_too_small_to_rank(tmp_path, capsys):
    frame = interactions()
    small = write_csv(tmp_path / "small.csv", frame[frame["item"].astype(int) <= 12])
    assert main(["data", "check", str(small)]) == 0
    assert "warning: 12 items after the filters" in capsys.readouterr().out
