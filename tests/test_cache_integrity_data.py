"""Verified caches (split folders, dataset folders), typed split settings, thin-data errors and the
missing-text line: tiny synthetic data in tmp folders, plus the split round trip on real ml-100k (slow)."""

from __future__ import annotations

import json
import os
import time

import pandas as pd
import pytest

import bench.data.cards
from bench.data.cards import cache_key, load_card, load_dataset, source_files
from bench.data.splits import (
    SPLIT_DEFAULTS,
    SPLIT_SETTINGS,
    SPLITTERS,
    load_or_make_split,
    make_split,
    resolve_split_params,
    split_hash,
)
from bench.errors import BenchError, UnknownChoiceError
from bench.types import Dataset
from tests.test_data import CHAIN, card, write_atomic

# ---------------------------------------------------------------- typed split settings

# the defaults before the settings were typed (run records and split folders hash these)
# (every ranking split gained longtail's `eval_negatives` 0: a default that keeps the old behaviour, so no run
# id moves; split folders, keyed by the resolved settings, are rebuilt once with the same content hash)
RANKED = {"eval_negatives": 0}
FORMER_DEFAULTS = {
    "temporal_loo": {"seed": 0, **RANKED},
    "random_loo": {"seed": 0, **RANKED},
    "half_history": {"seed": 0, "base": "temporal_loo", "drop_fraction": 0.5, "rounding": "ceil", **RANKED},
    "cold_users": {"seed": 0, "valid_fraction": 0.1, "test_fraction": 0.1, **RANKED},
    "new_users_fewshot": {"seed": 0, "valid_fraction": 0.1, "test_fraction": 0.1, "keep_history": 3, **RANKED},
    "longtail": {"seed": 0, "tail_user_threshold": 10, "tail_item_threshold": 20, "count_on": "all", **RANKED},
    "ctr_temporal": {"seed": 0, "label_threshold": 4, "train_months": 10.0, "valid_months": 5.0,
                     "test_months": 5.0, "warm_threshold": 3, "history": "pair", "history_length": 10,
                     "max_valid_users": 0, "max_test_users": 0, "max_pairs_per_test_user": 0, "shots": 0,
                     "shots_seed": 0},
}
# version 2: half_history rounds the removed count up (PROTOCOLS.md), ctr_temporal's history is every earlier
# positive (CoLLM's code) and it gained few-shot sampling; each default change bumped its class's version
SPLIT_VERSIONS = {"half_history": 2, "ctr_temporal": 2, "cold_users": 2}  # cold_users 2: PtE's protocol
FORMER_SEGMENT_DEFAULTS = {"cold_user_threshold": 10, "head_item_fraction": 0.2}


@pytest.mark.parametrize("name", sorted(FORMER_DEFAULTS))
def test_resolved_defaults_are_the_former_ones(name):
    resolved = resolve_split_params(name, {})
    if name == "longtail":  # a runtime field since (whether an empty segment stops a run; not in run ids)
        assert resolved.pop("empty_segments") == "error"
    expected = {**FORMER_DEFAULTS[name], **FORMER_SEGMENT_DEFAULTS}
    # same keys, values and JSON (an int default stays an int: 4, not 4.0)
    assert json.dumps(resolved, sort_keys=True) == json.dumps(expected, sort_keys=True)
    assert {k: v for k, v in SPLIT_DEFAULTS[name].items() if k != "empty_segments"} == FORMER_DEFAULTS[name]
    cls = SPLIT_SETTINGS[name]
    assert cls.version == SPLIT_VERSIONS.get(name, 1)
    assert cls.model_config["extra"] == "forbid" and cls.model_config["frozen"]


def test_every_splitter_has_settings():
    assert set(SPLIT_SETTINGS) == set(SPLITTERS)


BAD_VALUES = [
    ("new_users_fewshot", "keep_history", "abc", "integer >= 0"),
    ("new_users_fewshot", "keep_history", -1, "integer >= 0"),
    ("cold_users", "seed", "abc", "integer >= 0"),
    ("temporal_loo", "seed", -3, "integer >= 0"),
    ("random_loo", "seed", True, "integer >= 0"),
    ("cold_users", "test_fraction", 1.5, "number > 0 and < 1"),
    ("cold_users", "valid_fraction", 0, "number > 0 and < 1"),
    ("half_history", "drop_fraction", 1.0, "number > 0 and < 1"),
    ("half_history", "base", "cold_users", "one of 'temporal_loo', 'random_loo'"),
    ("temporal_loo", "head_item_fraction", "many", "number > 0 and < 1"),
    ("temporal_loo", "cold_user_threshold", 0, "integer >= 1"),
    ("longtail", "tail_user_threshold", 0, "integer >= 1"),
    ("longtail", "tail_item_threshold", 2.5, "integer >= 1"),
    ("longtail", "count_on", "test", "one of 'all', 'train'"),
    ("longtail", "eval_negatives", -1, "integer >= 0"),
    ("ctr_temporal", "history", "nope", "one of 'window_start', 'pair'"),
    ("ctr_temporal", "label_threshold", "high", "integer >= 1"),
    ("ctr_temporal", "train_months", 0, "number > 0"),
    ("ctr_temporal", "test_months", "abc", "number > 0"),
    ("ctr_temporal", "warm_threshold", 0, "integer >= 1"),
    ("ctr_temporal", "history_length", 0, "integer >= 1"),
    ("ctr_temporal", "max_test_users", -5, "integer >= 0"),
]


@pytest.mark.parametrize(("name", "key", "value", "valid"), BAD_VALUES)
def test_bad_split_value_is_one_line_error(name, key, value, valid, tiny_dataset, tmp_path):
    with pytest.raises(BenchError) as err:
        resolve_split_params(name, {key: value})
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"split {name!r}: setting {key}={value!r}: ")
    assert message.endswith(f"(valid: {valid})")
    # before any work: make_split and load_or_make_split refuse it too, and write nothing
    with pytest.raises(BenchError, match=f"setting {key}="):
        load_or_make_split(tiny_dataset, name, {**resolve_split_params(name, {}), key: value}, tmp_path)
    assert not (tmp_path / "splits").exists()


def test_bad_split_value_message_in_full():
    with pytest.raises(BenchError) as err:
        resolve_split_params("new_users_fewshot", {"keep_history": "abc"})
    assert str(err.value) == ("split 'new_users_fewshot': setting keep_history='abc': Input should be a valid integer, "
                              "unable to parse string as an integer (valid: integer >= 0)")


def test_unknown_split_key_and_name_keep_their_messages():
    with pytest.raises(BenchError) as err:
        resolve_split_params("half_history", {"drop_fractoin": 0.3})
    assert str(err.value) == ("unknown setting 'drop_fractoin' for split 'half_history'; valid settings: "
                              "base, cold_user_threshold, drop_fraction, eval_negatives, head_item_fraction, rounding, seed")
    with pytest.raises(UnknownChoiceError, match="did you mean 'longtail'"):
        resolve_split_params("longtial", {})


def test_typed_values_are_normalised():
    params = resolve_split_params("ctr_temporal", {"train_months": 4, "seed": 7, "history": "pair"})
    assert params["train_months"] == 4.0 and isinstance(params["train_months"], float)
    assert params["seed"] == 7 and params["history"] == "pair"


# ---------------------------------------------------------------- verified split cache


@pytest.mark.parametrize("recorded_files", [True, False], ids=["file-hashes", "content-hash-only"])
def test_truncated_split_file_is_rebuilt(tiny_dataset, tmp_path, capsys, recorded_files):
    params = resolve_split_params("temporal_loo", {})
    first = load_or_make_split(tiny_dataset, "temporal_loo", params, tmp_path)
    assert first.content_hash == make_split(tiny_dataset, "temporal_loo", params).content_hash
    info_path = first.path / "split.json"
    if not recorded_files:  # a folder saved before split.json recorded each file's sha256
        info = json.loads(info_path.read_text())
        del info["files"]
        info_path.write_text(json.dumps(info))
    train = first.path / "train.tsv"
    original = train.read_bytes()
    train.write_bytes(original[: len(original) // 2])
    capsys.readouterr()
    second = load_or_make_split(tiny_dataset, "temporal_loo", params, tmp_path)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    reason = "train.tsv changed" if recorded_files else "a file changed?"
    assert err[0] == (f"bench: cache: {first.path}: split does not match its recorded hash ({reason}); "
                      f"rebuilding")
    assert second.content_hash == first.content_hash and second.path == first.path
    assert train.read_bytes() == original
    assert len(second.train) == len(first.train)
    assert [p.name for p in first.path.parent.iterdir()] == [first.path.name]  # no stale or temp folder left
    load_or_make_split(tiny_dataset, "temporal_loo", params, tmp_path)
    assert capsys.readouterr().err == ""  # verified: no rebuild


def test_split_of_another_dataset_is_rebuilt(tiny_dataset, tmp_path, capsys):
    params = resolve_split_params("cold_users", {"valid_fraction": 0.2, "test_fraction": 0.2})
    first = load_or_make_split(tiny_dataset, "cold_users", params, tmp_path)
    info_path = first.path / "split.json"
    info = json.loads(info_path.read_text())
    info["dataset_hash"] = "f" * 64
    info_path.write_text(json.dumps(info))
    capsys.readouterr()
    second = load_or_make_split(tiny_dataset, "cold_users", params, tmp_path)
    err = capsys.readouterr().err.splitlines()
    assert err == [f"bench: cache: {first.path}: split was made from another dataset (dataset hash "
                   f"ffffffffffffffff, expected {tiny_dataset.content_hash[:16]}); rebuilding"]
    assert json.loads(info_path.read_text())["dataset_hash"] == tiny_dataset.content_hash
    assert second.content_hash == first.content_hash


@pytest.mark.parametrize("damage", ["garbage-json", "missing-file"])
def test_unreadable_split_is_rebuilt(tiny_dataset, tmp_path, capsys, damage):
    params = resolve_split_params("random_loo", {})
    first = load_or_make_split(tiny_dataset, "random_loo", params, tmp_path)
    if damage == "garbage-json":
        (first.path / "split.json").write_text("{not json")
    else:
        (first.path / "item_segment.tsv").unlink()
    capsys.readouterr()
    second = load_or_make_split(tiny_dataset, "random_loo", params, tmp_path)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"bench: cache: {first.path}: split cannot be read (")
    assert err[0].endswith("; rebuilding")
    assert second.content_hash == first.content_hash
    assert (first.path / "item_segment.tsv").is_file()


# ---------------------------------------------------------------- verified dataset cache


@pytest.fixture
def chain(tmp_path):
    rows = [(u, i, 5, t) for t, (u, i) in enumerate(CHAIN)]
    items = [(i, f"Title {i}", 2000, "Drama") for i in ("i1", "i2", "i3", "i4")]
    return write_atomic(tmp_path / "chain", rows, items)


def _dataset_folder(cache):
    (folder,) = (p for p in (cache / "datasets").iterdir() if p.is_dir())
    return folder


def _lower_ratings(folder):
    """interactions.csv with every rating one lower, its sha256 in dataset.json and the manifest updated too: only
    the recomputed content hash can tell."""
    from bench.hashing import write_manifest

    path = folder / "interactions.csv"
    frame = pd.read_csv(path, dtype={"user": str, "item": str})
    frame["rating"] -= 1
    path.write_text(frame.to_csv(index=False, lineterminator="\n"))
    import hashlib

    info = json.loads((folder / "dataset.json").read_text())
    info["files"]["interactions.csv"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (folder / "dataset.json").write_text(json.dumps(info))
    write_manifest(folder)


def _edit_csv(folder):
    path = folder / "interactions.csv"
    path.write_text(path.read_text().replace("u1,i1,5.0", "u1,i1,1.0"))


@pytest.mark.parametrize(("damage", "reason"), [
    (lambda f: (f / "interactions.csv").write_bytes(b""), "interactions.csv does not match its recorded sha256"),
    (lambda f: (f / "dataset.json").write_bytes(b"\x80\x05garbage"), "dataset.json cannot be read ("),
    (lambda f: (f / "items.csv").write_bytes((f / "items.csv").read_bytes()[:10]),
     "items.csv does not match its recorded sha256"),
    (lambda f: (f / "dataset.json").write_text(json.dumps({"not": "a dataset"})),
     "dataset.json is not a layout-1 description"),
    (_edit_csv, "interactions.csv does not match its recorded sha256"),
    (_lower_ratings, "does not match its recorded content hash"),
    (lambda f: (f / "item_text.csv").unlink(), "item_text.csv cannot be read ("),
], ids=["zero-byte", "garbage", "truncated", "foreign-object", "edited", "tampered", "missing-file"])
def test_bad_dataset_cache_is_rebuilt(chain, tmp_path, capsys, damage, reason):
    cache = tmp_path / "cache"
    first = load_dataset(card(chain), cache)
    folder = _dataset_folder(cache)
    damage(folder)
    capsys.readouterr()
    second = load_dataset(card(chain), cache)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"bench: cache: {folder}: dataset cache {reason}")
    assert err[0].endswith("; rebuilding")
    assert second.content_hash == first.content_hash
    assert second.interactions["rating"].tolist() == first.interactions["rating"].tolist()
    assert _dataset_folder(cache) == folder and not list((cache / "datasets").glob("*.pkl"))
    third = load_dataset(card(chain), cache)
    assert capsys.readouterr().err == ""
    pd.testing.assert_frame_equal(third.interactions, first.interactions)


def test_cache_key_follows_content_not_stamp(chain, tmp_path):
    cache = tmp_path / "cache"
    first = load_dataset(card(chain), cache)
    files = source_files(card(chain))
    memo = cache / "datasets"
    key = cache_key(card(chain), files, memo)
    assert key == cache_key(card(chain), files, memo)  # memoised: stable while nothing changes
    inter = chain / "chain.inter"
    before = inter.stat()
    time.sleep(0.05)  # ctime has clock-tick resolution: let the rewrite land on a later tick
    text = inter.read_text()
    assert "u1\ti1\t5" in text
    inter.write_text(text.replace("u1\ti1\t5", "u1\ti1\t4"))
    os.utime(inter, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = inter.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)  # the old stamp
    assert cache_key(card(chain), files, memo) != key
    changed = load_dataset(card(chain), cache)
    assert changed.content_hash != first.content_hash
    assert changed.content_hash == load_dataset(card(chain)).content_hash
    assert sorted(changed.interactions["rating"].tolist()) == [4.0] + [5.0] * 7
    assert len([p for p in memo.iterdir() if p.is_dir()]) == 2


def test_cache_key_ignores_the_path_and_shares_identical_content(chain, tmp_path):
    copy = tmp_path / "elsewhere" / "chain"
    copy.mkdir(parents=True)
    for file in chain.iterdir():
        (copy / file.name).write_bytes(file.read_bytes())
    memo = tmp_path / "cache" / "datasets"
    assert cache_key(card(chain), source_files(card(chain)), memo) == \
        cache_key(card(copy), source_files(card(copy)), memo)
    assert cache_key(card(chain), source_files(card(chain)), memo) != \
        cache_key(card(chain, kcore=2), source_files(card(chain)), memo)
    load_dataset(card(chain), tmp_path / "cache")
    moved = load_dataset(card(copy), tmp_path / "cache")  # from the cache, described with its own files
    assert moved.meta["sources"] == [str(copy / "chain.inter"), str(copy / "chain.item")]
    assert moved.meta["card"]["path"] == str(copy)


def test_dataset_card_has_a_version():
    assert bench.data.cards.DatasetCard.version == 1
    assert "version" not in bench.data.cards.DatasetCard.model_fields
    assert bench.data.cards.CACHE_VERSION == 2


# ---------------------------------------------------------------- thin data


def _dataset(rows: list[tuple[str, str, float]], name: str = "thin") -> Dataset:
    inter = pd.DataFrame([(u, i, 5.0, t) for u, i, t in rows], columns=["user", "item", "rating", "timestamp"])
    ids = sorted(inter["item"].unique())
    items = pd.DataFrame({"title": ids}, index=pd.Index(ids))
    return Dataset(name, inter, items, pd.Series(ids, index=items.index), "ab" * 32, {})


def test_empty_valid_and_test_parts_are_errors():
    # every user has two interactions: leave-one-out holds nobody out
    data = _dataset([(f"u{u}", f"i{k}", 10.0 * u + k) for u in range(5) for k in range(2)])
    with pytest.raises(BenchError) as err:
        make_split(data, "temporal_loo", resolve_split_params("temporal_loo", {}))
    assert str(err.value).startswith(
        "dataset 'thin', split 'temporal_loo' {\"cold_user_threshold\": 10, \"eval_negatives\": 0, \"head_item_fraction\": 0.2, "
        "\"seed\": 0}: the valid and test parts are empty; leave-one-out")


def test_empty_test_part_is_an_error():
    # ten users by last interaction u0..u9; u9 (the test user) has only 2 interactions, all kept as history
    rows = [(f"u{u}", f"i{k}", 100.0 * u + k) for u in range(9) for k in range(6)]
    rows += [("u9", "i0", 900.0), ("u9", "i1", 901.0)]
    data = _dataset(rows)
    params = resolve_split_params("new_users_fewshot", {})
    with pytest.raises(BenchError) as err:
        make_split(data, "new_users_fewshot", params)
    message = str(err.value)
    assert message.startswith(f"dataset 'thin', split 'new_users_fewshot' {json.dumps(params, sort_keys=True)}: ")
    assert '"keep_history": 3' in message
    assert message.endswith("the test part is empty; the held-out users have no interactions after the first "
                            "keep_history; lower keep_history, or change valid_fraction / test_fraction")
    split = make_split(data, "new_users_fewshot", resolve_split_params("new_users_fewshot", {"keep_history": 1}))
    assert split.test["item"].tolist() == ["i1"] and set(split.valid["user"]) == {"u8"}


def test_cold_users_without_held_out_users_is_an_error():
    data = _dataset([(f"u{u}", f"i{k}", 10.0 * u + k) for u in range(4) for k in range(5)])
    with pytest.raises(BenchError, match=r"^dataset 'thin', split 'cold_users' \{.*\}: valid_fraction=0.1 and "
                                         r"test_fraction=0.1 of 4 users hold out no test user; raise them"):
        make_split(data, "cold_users", resolve_split_params("cold_users", {}))


def test_longtail_without_tail_users_or_items_is_an_error(tiny_dataset):
    # every tiny user has 12 interactions: none is below the default tail_user_threshold of 10
    with pytest.raises(BenchError) as err:
        make_split(tiny_dataset, "longtail", resolve_split_params("longtail", {}))
    assert str(err.value).startswith("dataset 'tiny', split 'longtail' {")
    assert str(err.value).endswith("no tail user is evaluated (every test user has at least "
                                   "tail_user_threshold=10 interactions, counted on all); raise tail_user_threshold "
                                   "(or empty_segments: allow)")
    with pytest.raises(BenchError, match=r"no tail item is evaluated .*tail_item_threshold=1 interactions"):
        make_split(tiny_dataset, "longtail",
                   resolve_split_params("longtail", {"tail_user_threshold": 13, "tail_item_threshold": 1}))
    split = make_split(tiny_dataset, "longtail", resolve_split_params("longtail", {"tail_user_threshold": 13}))
    assert (split.user_segment == "cold").all() and len(split.user_segment) == 30


def test_empty_segment_of_other_splits_is_recorded_not_an_error(tiny_dataset):
    split = make_split(tiny_dataset, "temporal_loo", resolve_split_params("temporal_loo", {"cold_user_threshold": 1}))
    assert split.user_segment.value_counts().to_dict() == {"warm": 30}


def test_ctr_error_names_the_dataset_once(tiny_dataset):
    with pytest.raises(BenchError) as err:
        make_split(tiny_dataset, "ctr_temporal", resolve_split_params("ctr_temporal", {}))
    message = str(err.value)
    assert message.startswith("dataset 'tiny', split 'ctr_temporal' {")
    assert "}: 10.0+5.0+5.0 months reach before the first rating; the data spans 0.0 months" in message
    assert "ctr_temporal: " not in message


# ---------------------------------------------------------------- items without text


def test_missing_text_line_printed_once(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench.data.cards, "_MISSING_TEXT_REPORTED", set())
    rows = [("1", "1", 5, 1), ("1", "2", 5, 2), ("2", "2", 5, 3), ("2", "3", 5, 4), ("3", "4", 5, 5)]
    folder = write_atomic(tmp_path / "m", rows, [("1", "One", 2000, "A"), ("2", "", 2001, "B"),
                                                 ("3", "Three", 2002, "C")])
    line = "bench: dataset 'tiny': 2 items without text (policy: placeholder); first ids: 2, 4"
    first = load_dataset(card(folder), tmp_path / "cache")  # prepared
    load_dataset(card(folder), tmp_path / "cache")  # from the cache
    load_dataset(card(folder))  # prepared again, no cache
    assert capsys.readouterr().err.splitlines() == [line]
    assert first.meta["missing_text"] == {"policy": "placeholder", "count": 2, "first_ids": ["2", "4"]}
    monkeypatch.setattr(bench.data.cards, "_MISSING_TEXT_REPORTED", set())  # a new process
    load_dataset(card(folder), tmp_path / "cache")
    assert capsys.readouterr().err.splitlines() == [line]
    complete = write_atomic(tmp_path / "c", rows, [(i, f"T{i}", 2000, "A") for i in "1234"])
    load_dataset(card(complete), tmp_path / "cache")
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------- round trip on real data


@pytest.fixture(scope="module")
def ml100k():
    return load_dataset(load_card("ml-100k"))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["temporal_loo", "new_users_fewshot", "cold_users"])
def test_saved_split_reproduces_make_split_hash(ml100k, tmp_path, name):
    params = resolve_split_params(name, {})
    made = make_split(ml100k, name, params)
    saved = load_or_make_split(ml100k, name, params, tmp_path)
    info = json.loads((saved.path / "split.json").read_text())
    assert info["content_hash"] == made.content_hash == saved.content_hash
    assert split_hash(saved) == made.content_hash  # recomputed from the frames read back from the files
    assert len(saved.train) == len(made.train) and len(saved.test) == len(made.test)


# the split hashes in the run records committed under results/runs (made before the cache was verified)
RECORDED_SPLIT_HASHES = {
    "temporal_loo": "21eb2a8b44ee20f17298cf198d6c77c2fdb4fe157a59978013013b9b165ee27f",
    "new_users_fewshot": "d6637475b103df7fb18efc21fb2d0e45f4c8727020d48e22f8282b17ab3589c7",  # was cold_users v1
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RECORDED_SPLIT_HASHES))
def test_make_split_hash_is_the_recorded_one(ml100k, name):
    assert ml100k.content_hash == "c3fa822e009e069d36db867e881b52cbbfa212d20e321d8a9a32355c0ae0e1f7"
    assert make_split(ml100k, name, resolve_split_params(name, {})).content_hash == RECORDED_SPLIT_HASHES[name]


def test_a_card_read_back_from_a_run_record_reuses_the_cached_dataset(chain, tmp_path, capsys):
    """A run record stores its card with sorted keys; rebuilt from it (`bench figures`), the card must hash as
    the card file does, or each side finds the other's cached data set stale and rebuilds it (it did)."""
    cache = tmp_path / "cache"
    fields = {"title": "movie_title", "year": "release_year", "genres": "class"}
    written = card(chain, text_template="{title} ({year}). {genres}", text_fields=fields)
    first = load_dataset(written, cache)
    target = _dataset_folder(cache) / "dataset.json"
    stamp = target.stat().st_mtime_ns
    from_record = bench.data.cards.DatasetCard.model_validate(
        json.loads(json.dumps(written.model_dump(mode="json"), sort_keys=True)))
    assert list(from_record.text_fields) == ["title", "year", "genres"]  # template order, not sorted
    capsys.readouterr()
    second = load_dataset(from_record, cache)
    assert capsys.readouterr().err == "" and target.stat().st_mtime_ns == stamp
    assert second.content_hash == first.content_hash
    extra = card(chain, text_fields={"zeta": "class", "title": "movie_title", "alpha": "release_year"})
    assert list(extra.text_fields) == ["title", "alpha", "zeta"]  # used ones first, then sorted
