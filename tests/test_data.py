"""Dataset cards and loaders: tiny synthetic files (atomic, ml-1m, Amazon 2018/2023) and real MovieLens."""

from __future__ import annotations

import gzip
import json
import os
import time
from pathlib import Path

import pandas as pd
import pytest

from bench.data.cards import CARD_NAMES, DatasetCard, kcore_filter, load_card, load_dataset
from bench.errors import BenchError, DataFileError, UnknownChoiceError

INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"
ITEM_HEADER = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"


def write_atomic(folder: Path, inter: list[tuple], items: list[tuple] | None = None,
                 inter_header: str = INTER_HEADER, item_header: str = ITEM_HEADER) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [inter_header] + ["\t".join(map(str, row)) for row in inter]
    (folder / f"{folder.name}.inter").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if items is not None:
        lines = [item_header] + ["\t".join(map(str, row)) for row in items]
        (folder / f"{folder.name}.item").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def card(folder: Path, **settings) -> DatasetCard:
    base = {"name": "tiny", "loader": "atomic", "path": str(folder), "text_template": "{title}",
            "text_fields": {"title": "movie_title", "year": "release_year", "genres": "class"}}
    return DatasetCard.model_validate({**base, **settings})


# k = 2: item i4 goes in pass 1, which leaves u4 with one item (pass 2), then i3 (pass 3), then u3 (pass 4)
CHAIN = [("u1", "i1"), ("u1", "i2"), ("u2", "i1"), ("u2", "i2"), ("u3", "i2"), ("u3", "i3"),
         ("u4", "i3"), ("u4", "i4")]


@pytest.fixture
def chain(tmp_path) -> Path:
    rows = [(u, i, 5, t) for t, (u, i) in enumerate(CHAIN)]
    items = [(i, f"Title {i}", 2000, "Drama") for i in ("i1", "i2", "i3", "i4")]
    return write_atomic(tmp_path / "chain", rows, items)


def test_kcore_is_iterative(chain):
    inter = pd.DataFrame(CHAIN, columns=["user", "item"])
    kept, passes = kcore_filter(inter, 2)
    assert sorted(zip(kept["user"], kept["item"])) == [("u1", "i1"), ("u1", "i2"), ("u2", "i1"), ("u2", "i2")]
    assert passes == 4
    dataset = load_dataset(card(chain, kcore=2))
    assert dataset.meta["counts"]["kcore"] == {"users": 2, "items": 2, "interactions": 4}
    assert dataset.meta["counts"]["raw"] == {"users": 4, "items": 4, "interactions": 8}
    assert list(dataset.items.index) == ["i1", "i2"]
    assert list(dataset.item_text) == ["Title i1", "Title i2"]


def test_min_rating_then_kcore_and_order(tmp_path):
    rows = [("2", "10", 5, 3), ("2", "9", 4, 2), ("10", "9", 3, 1), ("10", "10", 4.5, 7), ("1", "9", 1, 0)]
    folder = write_atomic(tmp_path / "r", rows, [("9", "Nine", 1999, "A"), ("10", "Ten", 2001, "B")])
    dataset = load_dataset(card(folder, min_rating=4))
    inter = dataset.interactions
    assert dataset.meta["counts"]["min_rating"] == {"users": 2, "items": 2, "interactions": 3}
    assert inter["rating"].tolist() == [4.0, 5.0, 4.5]
    assert inter["user"].tolist() == ["2", "2", "10"]  # numeric user order, then time
    assert list(dataset.items.index) == ["9", "10"]  # numeric order
    assert list(inter.columns) == ["user", "item", "rating", "timestamp"]
    assert inter["timestamp"].dtype == "float64" and isinstance(inter["user"].iloc[0], str)


def test_optional_rating_and_timestamp(tmp_path):
    folder = write_atomic(tmp_path / "bare", [("a", "x"), ("a", "y"), ("b", "x")], None,
                          inter_header="user_id:token\titem_id:token")
    dataset = load_dataset(DatasetCard(name="bare", loader="atomic", path=str(folder)))
    assert dataset.interactions["rating"].tolist() == [1.0, 1.0, 1.0]
    assert dataset.interactions["timestamp"].tolist() == [0.0, 1.0, 2.0]
    assert dataset.item_text.to_dict() == {"x": "item x", "y": "item y"}  # no item file: placeholders
    assert dataset.meta["missing_text"]["count"] == 2


def test_template_rendering(tmp_path):
    rows = [("1", "1", 5, 1), ("1", "2", 5, 2)]
    items = [("1", "Toy  Story", 1995, "Animation Children's Comedy"), ("2", "Heat", "", "")]
    folder = write_atomic(tmp_path / "t", rows, items)
    dataset = load_dataset(card(folder, text_template="{title} ({year}). Genres: {genres}. [{id}]"))
    assert dataset.item_text["1"] == "Toy Story (1995). Genres: Animation, Children's, Comedy. [1]"
    assert dataset.item_text["2"] == "Heat (). Genres: . [2]"
    assert dataset.items.loc["1", "genres"] == "Animation, Children's, Comedy"
    assert dataset.items.loc["2", "year"] == ""


@pytest.fixture
def untitled(tmp_path) -> Path:
    rows = [("1", "1", 5, 1), ("1", "2", 5, 2), ("2", "2", 5, 3), ("2", "3", 5, 4), ("3", "4", 5, 5)]
    items = [("1", "One", 2000, "A"), ("2", "", 2001, "B"), ("3", "Three", 2002, "C")]  # 4: not listed
    return write_atomic(tmp_path / "m", rows, items)


def test_missing_text_placeholder(untitled):
    dataset = load_dataset(card(untitled, text_template="{title} ({year})"))
    assert dataset.meta["missing_text"] == {"policy": "placeholder", "count": 2, "first_ids": ["2", "4"]}
    assert dataset.item_text.to_dict() == {"1": "One (2000)", "2": "item 2 (2001)", "3": "Three (2002)",
                                           "4": "item 4 ()"}
    assert dataset.items.loc["2", "title"] == ""


def test_missing_text_drop(untitled):
    dataset = load_dataset(card(untitled, missing_text="drop"))
    assert dataset.meta["missing_text"]["count"] == 2
    assert list(dataset.items.index) == ["1", "3"]
    assert sorted(zip(dataset.interactions["user"], dataset.interactions["item"])) == [("1", "1"), ("2", "3")]
    assert dataset.meta["counts"]["final"] == {"users": 2, "items": 2, "interactions": 2}


def test_missing_text_error(untitled):
    with pytest.raises(BenchError, match=r"2 items have no title \(first: 2, 4\)"):
        load_dataset(card(untitled, missing_text="error"))


def test_missing_column_names_file_and_column(tmp_path):
    folder = write_atomic(tmp_path / "bad", [("1", 5, 1)], None,
                          inter_header="user_id:token\trating:float\ttimestamp:float")
    with pytest.raises(DataFileError) as err:
        load_dataset(card(folder))
    message = str(err.value)
    assert "bad.inter" in message and "'item_id'" in message and "user_id, rating, timestamp" in message


def test_non_numeric_value_names_line(tmp_path):
    rows = [("1", "1", 5, 1), ("1", "2", 4, 2), ("2", "1", "five", 3)]
    folder = write_atomic(tmp_path / "nn", rows, None)
    with pytest.raises(DataFileError, match=r"nn\.inter, column 'rating', line 4: non-numeric value 'five'"):
        load_dataset(card(folder))


def test_missing_item_column_names_file(tmp_path):
    folder = write_atomic(tmp_path / "ic", [("1", "1", 5, 1)], [("1", "One", 2000, "A")])
    with pytest.raises(DataFileError, match=r"ic\.item, column 'plot'"):
        load_dataset(card(folder, text_fields={"title": "movie_title", "plot": "plot"}))


def test_content_hash_and_cache(chain, tmp_path):
    first, second = load_dataset(card(chain)), load_dataset(card(chain))
    assert first.content_hash == second.content_hash
    cached = load_dataset(card(chain), tmp_path / "cache")
    assert cached.content_hash == first.content_hash
    assert len([p for p in (tmp_path / "cache" / "datasets").iterdir() if p.is_dir()]) == 1
    assert load_dataset(card(chain), tmp_path / "cache").content_hash == first.content_hash
    inter = chain / "chain.inter"
    inter.write_text(inter.read_text().replace("u1\ti1\t5", "u1\ti1\t4"))
    os.utime(inter, ns=(time.time_ns(), time.time_ns() + 10**9))
    changed = load_dataset(card(chain), tmp_path / "cache")
    assert changed.content_hash != first.content_hash
    assert load_dataset(card(chain)).content_hash == changed.content_hash
    assert len([p for p in (tmp_path / "cache" / "datasets").iterdir() if p.is_dir()]) == 2


def test_ml1m_remap(tmp_path):
    rows = [("1m_2", "Toy Story (1995)", 5, 1), ("1m_2", "Heat (1995)", 4, 2), ("1m_10", "Heat (1995)", 3, 3)]
    items = [("Toy Story (1995)", "Toy Story", 1995.0, "Animation Comedy"),
             ("Heat (1995)", "Heat", 1995.0, "Action"), ("Alien (1979)", "Alien", 1979.0, "Horror")]
    folder = write_atomic(tmp_path / "ml-1m", rows, items,
                          item_header="item_id:token\tmovie_title:token\trelease_year:float\tgenre:token")
    dataset = load_dataset(DatasetCard(name="m", loader="ml-1m", path=str(folder),
                                       text_template="{title} ({year}). Genres: {genres}."))
    assert dataset.interactions["user"].tolist() == ["2", "2", "10"]
    assert dataset.items["source_id"].to_dict() == {"2": "Heat (1995)", "3": "Toy Story (1995)"}  # Alien = 1
    assert dataset.item_text.to_dict() == {"2": "Heat (1995). Genres: Action.",
                                           "3": "Toy Story (1995). Genres: Animation, Comedy."}


def write_jsonl(path: Path, rows: list, literal: bool = False) -> Path:
    lines = [repr(r) if literal else (r if isinstance(r, str) else json.dumps(r)) for r in rows]
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


def test_amazon2018(tmp_path):
    reviews = [{"reviewerID": u, "asin": a, "overall": r, "unixReviewTime": t}
               for u, a, r, t in [("A", "B1", 5.0, 100), ("A", "B2", 3.0, 200), ("C", "B1", 4.0, 300)]]
    write_jsonl(tmp_path / "Beauty_5.json.gz", reviews)
    meta = [{"asin": "B1", "title": "Soap", "brand": "Acme", "categories": [["Beauty", "Bath"], ["Beauty"]]},
            {"asin": "B9", "title": "Unused"}, {"asin": "B2", "description": "no title here"}]
    write_jsonl(tmp_path / "meta_Beauty.json.gz", meta, literal=True)  # 2014-era Python-literal lines
    path = str(tmp_path / "Beauty_5.json.gz")
    dataset = load_dataset(DatasetCard(name="beauty", loader="amazon2018", path=path, min_rating=4,
                                       text_template="{title} by {brand}. {categories}"))
    assert dataset.interactions[["user", "item", "timestamp"]].values.tolist() == [["A", "B1", 100.0],
                                                                                   ["C", "B1", 300.0]]
    assert dataset.item_text.to_dict() == {"B1": "Soap by Acme. Beauty, Bath"}
    assert dataset.meta["sources"][1].endswith("meta_Beauty.json.gz")
    full = load_dataset(DatasetCard(name="beauty", loader="amazon2018", path=path))
    assert full.meta["missing_text"]["first_ids"] == ["B2"] and full.item_text["B2"] == "item B2"


def test_amazon_bad_json_line(tmp_path):
    good = {"reviewerID": "A", "asin": "B1", "overall": 5.0, "unixReviewTime": 1}
    write_jsonl(tmp_path / "reviews_Toys.json.gz", [good, good, "{not json"])
    write_jsonl(tmp_path / "meta_Toys.json.gz", [{"asin": "B1", "title": "Ball"}])
    with pytest.raises(DataFileError, match=r"reviews_Toys\.json\.gz, line 3: not valid JSON"):
        load_dataset(DatasetCard(name="t", loader="amazon2018", path=str(tmp_path / "reviews_Toys.json.gz")))
    (tmp_path / "meta_Toys.json.gz").unlink()
    with pytest.raises(DataFileError, match=r"meta_Toys\.json\.gz: metadata file \(meta_path\) not found"):
        load_dataset(DatasetCard(name="t", loader="amazon2018", path=str(tmp_path / "reviews_Toys.json.gz"),
                                 meta_path=str(tmp_path / "meta_Toys.json.gz")))


def test_amazon_metadata_is_optional(tmp_path):
    """Without a meta_<Category> file (and no meta_path) the reviews load with placeholder item text."""
    from bench.data.cards import item_text_source

    write_jsonl(tmp_path / "reviews_Toys.json.gz",
                [{"reviewerID": "A", "asin": "B1", "overall": 5.0, "unixReviewTime": 1}])
    card = DatasetCard(name="t", loader="amazon2018", path=str(tmp_path / "reviews_Toys.json.gz"))
    dataset = load_dataset(card)
    assert dataset.item_text.to_dict() == {"B1": "item B1"}
    source, why = item_text_source(card)
    assert source is None and "meta_Toys.json.gz" in why


def test_amazon2023(tmp_path):
    reviews = [{"user_id": "U1", "parent_asin": "P1", "asin": "X", "rating": 5.0, "timestamp": 1588615855070},
               {"user_id": "U2", "parent_asin": "P1", "asin": "Y", "rating": 2.0, "timestamp": 1588615856000}]
    write_jsonl(tmp_path / "All_Beauty.jsonl.gz", reviews)
    meta = {"parent_asin": "P1", "title": "Mask", "main_category": "All Beauty", "features": ["soft", "blue"],
            "categories": []}
    write_jsonl(tmp_path / "meta_All_Beauty.jsonl.gz", [meta])
    path = str(tmp_path / "All_Beauty.jsonl.gz")
    dataset = load_dataset(DatasetCard(name="ab", loader="amazon2023", path=path,
                                       text_template="{title} [{main_category}] {features} {categories}"))
    assert dataset.interactions["timestamp"].tolist() == [1588615855.07, 1588615856.0]
    assert dataset.item_text.to_dict() == {"P1": "Mask [All Beauty] soft blue"}


def test_load_card_builtin_overrides_and_errors(tmp_path):
    builtin = load_card("ml-100k")
    assert (builtin.loader, builtin.min_rating, builtin.kcore, builtin.path) == ("ml-100k", 4, 5, None)
    assert load_card("ml-1m", {"kcore": 10}).kcore == 10
    with pytest.raises(BenchError, match=r"unknown setting 'kcores'; valid settings: name, loader, path"):
        load_card("ml-100k", {"kcores": 3})
    with pytest.raises(UnknownChoiceError, match="ml-100k, ml-1m"):
        load_card("ml-10m")
    with pytest.raises(BenchError, match="text_template uses plot"):
        load_card("ml-100k", {"text_template": "{title}: {plot}"})
    with pytest.raises(BenchError, match="kcore"):
        load_card("ml-100k", {"kcore": -1})
    user = tmp_path / "cards" / "mine.yaml"
    user.parent.mkdir()
    user.write_text("loader: atomic\npath: ../data\ntext_template: '{movie_title}'\n")
    loaded = load_card(user)
    assert loaded.name == "mine" and loaded.path == str((tmp_path / "data").resolve())


def test_card_names_match_files():
    folder = Path(__file__).resolve().parents[1] / "datasets" / "cards"
    assert sorted(p.stem for p in folder.glob("*.yaml")) == sorted(CARD_NAMES)
    for name in CARD_NAMES:
        assert load_card(name).name == name


@pytest.mark.slow
def test_real_ml100k():
    dataset = load_dataset(load_card("ml-100k"))
    assert dataset.meta["counts"]["raw"] == {"users": 943, "items": 1682, "interactions": 100000}
    assert dataset.meta["counts"]["final"] == {"users": 938, "items": 1008, "interactions": 54413}
    assert "Toy Story" in dataset.item_text["1"]
    assert dataset.item_text["1"] == "Toy Story (1995). Genres: Animation, Children's, Comedy."
    assert dataset.interactions["rating"].min() >= 4
    assert dataset.interactions.groupby("user").size().min() >= 5
    assert dataset.interactions.groupby("item").size().min() >= 5


@pytest.mark.slow
def test_real_ml1m():
    dataset = load_dataset(load_card("ml-1m"))
    assert dataset.meta["counts"]["raw"] == {"users": 6040, "items": 3706, "interactions": 1000209}
    assert dataset.meta["counts"]["final"] == {"users": 6034, "items": 3125, "interactions": 574376}
    assert dataset.items.index[0] == "1" and dataset.items["source_id"].is_monotonic_increasing
    toy = dataset.items.index[dataset.items["source_id"] == "Toy Story (1995)"][0]
    assert dataset.item_text[toy] == "Toy Story (1995). Genres: Animation, Children's, Comedy."
    assert not dataset.interactions["user"].str.startswith("1m_").any()


# ------------------------------------------------------------------ issue 25: header lines, encodings
def test_a_repeated_header_line_in_a_token_only_file_is_an_error_naming_its_line(tmp_path):
    folder = write_atomic(tmp_path / "cat", [("1", "1"), ("1", "2"), ("user_id:token", "item_id:token"), ("2", "1")],
                          None, inter_header="user_id:token\titem_id:token")
    with pytest.raises(DataFileError, match=r"cat\.inter, line 4: the header line repeated"):
        load_dataset(card(folder, text_fields={}, text_template="{id}"))
    typed = write_atomic(tmp_path / "typed", [("1", "1", 5, 1), ("user_id:token", "item_id:token", "rating:float",
                                                                   "timestamp:float")], None)
    with pytest.raises(DataFileError, match=r"typed\.inter, line 3: the header line repeated"):
        load_dataset(card(typed, text_fields={}, text_template="{id}"))


def test_a_byte_that_is_not_utf8_names_its_line_and_column(tmp_path):
    folder = write_atomic(tmp_path / "latin", [("1", "1", 5, 1), ("1", "2", 4, 2)],
                          [("1", "One", 2000, "Drama"), ("2", "Two", 2001, "Drama")])
    with open(folder / "latin.item", "ab") as handle:
        handle.write(b"3\tCaf\xe9\t2002\tDrama\n")
    with pytest.raises(DataFileError, match=r"latin\.item, line 4: not UTF-8 text at column 6 \(byte 0xe9\)"):
        load_dataset(card(folder))


def test_an_amazon_line_that_is_not_utf8_is_named(tmp_path):
    good = json.dumps({"reviewerID": "A", "asin": "B1", "overall": 5.0, "unixReviewTime": 1}).encode()
    (tmp_path / "reviews_Toys.json").write_bytes(b"\n".join([good, good, good[:-2] + b'\xff"}', good]) + b"\n")
    write_jsonl(tmp_path / "meta_Toys.json.gz", [{"asin": "B1", "title": "Ball"}])
    with pytest.raises(DataFileError, match=r"reviews_Toys\.json, line 3: not UTF-8 text at column \d+ \(byte 0xff\)"):
        load_dataset(DatasetCard(name="t", loader="amazon2018", path=str(tmp_path / "reviews_Toys.json")))


def test_a_card_file_that_is_not_utf8_names_its_line(tmp_path):
    path = tmp_path / "card.yaml"
    path.write_bytes(b"name: t\nloader: atomic\ntext_template: 'caf\xe9'\n")
    with pytest.raises(BenchError, match=r"card\.yaml, line 3, column 20: dataset card is not UTF-8 text"):
        load_card(str(path))
