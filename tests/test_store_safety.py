"""A store you can trust at scale: caches hold data, never code (a pickle left where the old dataset cache lived is
never unpickled); run records are sealed (content and sidecars), checked whenever the store reads them, kept out
of tables when they fail, listed by `bench verify --records`; unsealed legacy records still load and
`scripts/seal_records.py` seals them in place."""

from __future__ import annotations

import json
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.cli import main
from bench.data.cards import DatasetCard, cache_key, load_dataset, source_files
from bench.records import PAIRS_FILE, ResultStore, record_digest
from tests.test_data import CHAIN, card, write_atomic, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "results" / "runs"


# ---------------------------------------------------------------- caches hold data, never code


class _CreatesFile:
    """Unpickling this opens (creates) `path` for writing: code run by whoever loads the pickle."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


@pytest.fixture
def chain(tmp_path) -> Path:
    rows = [(u, i, 5, t) for t, (u, i) in enumerate(CHAIN)]
    items = [(i, f"Title {i}", 2000, "Drama") for i in ("i1", "i2", "i3", "i4")]
    return write_atomic(tmp_path / "chain", rows, items)


def assert_same_dataset(a, b) -> None:
    pd.testing.assert_frame_equal(a.interactions, b.interactions, check_exact=True)
    pd.testing.assert_frame_equal(a.items, b.items, check_exact=True)
    pd.testing.assert_series_equal(a.item_text, b.item_text, check_exact=True)
    assert (a.name, a.content_hash, a.meta) == (b.name, b.content_hash, b.meta)


def test_a_pickle_where_the_old_dataset_cache_lived_is_never_executed(chain, tmp_path, capsys, monkeypatch):
    cache = tmp_path / "cache"
    key = cache_key(card(chain), source_files(card(chain)), cache / "datasets")
    old = cache / "datasets" / f"{key}.pkl"
    old.parent.mkdir(parents=True, exist_ok=True)  # cache_key wrote its source-hash memo there
    # the payload does run code when unpickled (shown on a marker of its own)...
    control = tmp_path / "control-marker"
    pickle.loads(pickle.dumps(_CreatesFile(control))).close()
    assert control.exists()
    # ...and the one placed where the old cache lived is never unpickled
    marker = tmp_path / "pwned-marker"
    old.write_bytes(pickle.dumps(_CreatesFile(marker)))

    def refuse(*args, **kwargs):
        raise AssertionError("a cache was unpickled")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(pd, "read_pickle", refuse)
    capsys.readouterr()
    dataset = load_dataset(card(chain), cache)
    assert not marker.exists()
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"bench: cache: {old}: dataset cache from an older version (a pickle, "
                                               "never loaded")
    assert_same_dataset(dataset, load_dataset(card(chain)))
    assert (cache / "datasets" / key / "dataset.json").is_file()
    again = load_dataset(card(chain), cache)  # the data-format cache now: no line, same data, still no file
    assert capsys.readouterr().err == "" and not marker.exists()
    assert_same_dataset(again, dataset)


def test_a_tampered_dataset_cache_is_detected_and_rebuilt(chain, tmp_path, capsys):
    cache = tmp_path / "cache"
    first = load_dataset(card(chain), cache)
    (folder,) = (p for p in (cache / "datasets").iterdir() if p.is_dir())
    items = folder / "items.csv"  # item metadata is outside the content hash: its sha256 catches it
    items.write_text(items.read_text().replace("Drama", "Horror"))
    capsys.readouterr()
    second = load_dataset(card(chain), cache)
    err = capsys.readouterr().err.splitlines()
    assert err == [f"bench: cache: {folder}: dataset cache items.csv does not match its recorded sha256; rebuilding"]
    assert_same_dataset(second, first)
    assert "Horror" not in items.read_text()


def _cards(tmp_path) -> list[DatasetCard]:
    """Cards of every loader shape: atomic with and without an item file, ml-1m's remapped ids (source_id), Amazon
    with a placeholder title, the drop policy, commas, quotes and a 'NA' id in the data."""
    rows = [(u, i, 5, t) for t, (u, i) in enumerate(CHAIN)] + [("NA", "i1", 4.5, 99.25)]
    items = [("i1", 'Title, "quoted"', 2000, "Drama"), ("i2", "NA", 1999, ""), ("i3", "x", 1, "A B"),
             ("i4", "", 2, "C")]
    atomic = write_atomic(tmp_path / "atomic", rows, items)
    bare = write_atomic(tmp_path / "bare", rows)
    ml1m = write_atomic(tmp_path / "ml-1m", [("1m_2", "Toy Story (1995)", 5, 1), ("1m_2", "Heat (1995)", 4, 2),
                                             ("1m_10", "Heat (1995)", 3, 3)],
                        [("Toy Story (1995)", "Toy Story", 1995.0, "Animation Comedy"),
                         ("Heat (1995)", "Heat", 1995.0, "Action"), ("Alien (1979)", "Alien", 1979.0, "Horror")],
                        item_header="item_id:token\tmovie_title:token\trelease_year:float\tgenre:token")
    reviews = [{"reviewerID": u, "asin": a, "overall": r, "unixReviewTime": t}
               for u, a, r, t in [("A", "B1", 5.0, 100), ("A", "B2", 3.0, 200), ("C", "B1", 4.0, 300)]]
    write_jsonl(tmp_path / "Beauty_5.json.gz", reviews)
    write_jsonl(tmp_path / "meta_Beauty.json.gz", [{"asin": "B1", "title": "Soap", "brand": "Acme"},
                                                   {"asin": "B2", "description": "no title"}])
    return [card(atomic), card(atomic, missing_text="drop", text_template="{title} ({year}) {genres}"),
            DatasetCard(name="bare", loader="atomic", path=str(bare), text_template="item {id}"),
            DatasetCard(name="m", loader="ml-1m", path=str(ml1m), text_template="{title} ({year}). {genres}."),
            DatasetCard(name="beauty", loader="amazon2018", path=str(tmp_path / "Beauty_5.json.gz"))]


def test_the_data_format_cache_gives_back_exactly_the_prepared_dataset(tmp_path, capsys):
    for number, each in enumerate(_cards(tmp_path)):
        cache = tmp_path / f"cache{number}"
        fresh = load_dataset(each)
        assert_same_dataset(load_dataset(each, cache), fresh)  # built, then read back
        assert_same_dataset(load_dataset(each, cache), fresh)  # read from the cache
    assert "bench: cache:" not in capsys.readouterr().err


PICKLE_CALLS = re.compile(r"pickle\.(load|loads|Unpickler)\b|read_pickle\s*\(|allow_pickle\s*=\s*True|"
                          r"weights_only\s*=\s*False|[\"']weights_only[\"']\s*,\s*False|joblib\.load|dill\.load")
# none left: RecBole's best checkpoint (its Config object needed full unpickling) now holds tensors and plain
# data only and is read with weights_only=True (bench/recbole_compat.py `_weights_only_checkpoint`)
KNOWN_PICKLE_CALLS: dict[str, int] = {}


def test_no_code_loads_a_pickle_from_a_cache_or_a_record():
    found: dict[str, int] = {}
    for folder in ("bench", "methods"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            hits = len(PICKLE_CALLS.findall(path.read_text(encoding="utf-8")))
            if hits:
                found[path.relative_to(ROOT).as_posix()] = hits
    assert found == KNOWN_PICKLE_CALLS


# ---------------------------------------------------------------- sealed records

N_USERS = 40


def _write(store: ResultStore, spec, level: float, sidecars=None) -> None:
    values = np.round(np.linspace(level - 0.01, level + 0.01, N_USERS), 6)
    per_user = pd.DataFrame({"user": [str(u) for u in range(N_USERS)], "ndcg@10": values, "recall@10": values * 2,
                             "ndcg@20": values * 1.5, "recall@20": values * 3})
    overall = {key: float(np.nanmean(per_user[key])) for key in per_user.columns[1:]} | {"n_users": N_USERS}
    store.write(spec.run_id, {"status": "complete", "run_id": spec.run_id, "spec": spec.model_dump(mode="json"),
                              "metrics": {"overall": overall}, "params": {"trainable": 10},
                              "latency": {"median_ms": 1.0}, "timings": {"train": 1.0},
                              "provenance": {"split_hash": "x"}}, per_user, sidecars)


@pytest.fixture
def smoke(tmp_path):
    """The smoke suite's two runs (random, llminit-var) stored with distinct levels: a tiny sealed store."""
    from bench.spec import expand, load_suite

    suite = load_suite("smoke")
    specs = expand(suite)
    store = ResultStore(tmp_path / "results")
    for spec, level in zip(specs, (0.2, 0.3)):
        _write(store, spec, level)
    return suite, specs, store


def _edit(store: ResultStore, run_id: str, change) -> None:
    path = store.record_path(run_id)
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record, indent=1, sort_keys=True))


def _tables(suite, specs, store, out):
    from bench.report.tables import write_tables

    return write_tables(suite, specs, store, out, formats=("markdown", "csv"))


def test_records_are_sealed_over_content_and_sidecars(smoke):
    _, specs, store = smoke
    record = store.load(specs[0].run_id)
    seal = record["seal"]
    assert seal["algorithm"] == "sha256" and seal["content"] == record_digest(record)
    assert sorted(seal["files"]) == ["per_user.csv.gz"]
    assert store.has(specs[0].run_id) and len(store.records()) == 2


def test_a_record_without_metrics_is_named_in_one_line_and_kept_out_of_tables(smoke, tmp_path, capsys):
    suite, specs, store = smoke
    bad = specs[1].run_id
    _edit(store, bad, lambda r: r.pop("metrics"))
    assert store.problem(bad) == "required field 'metrics' missing" and not store.has(bad)
    capsys.readouterr()
    written = _tables(suite, specs, store, tmp_path / "tables")
    err = [line for line in capsys.readouterr().err.splitlines() if bad in line]
    assert err == [f"bench: skipping {store.record_path(bad)}: required field 'metrics' missing"]
    text = "".join(p.read_text() for p in written.values())
    assert specs[0].run_id in text and bad not in text
    assert pd.read_csv(written["main.csv"])["Method"].tolist() == ["random"]
    with pytest.raises(Exception, match="required field 'metrics' missing"):
        store.load(bad)
    # the same holds for an unsealed (legacy) record: its fields are checked all the same
    _edit(store, bad, lambda r: r.pop("seal"))
    assert store.problem(bad) == "required field 'metrics' missing"


def test_a_hand_edited_metric_breaks_the_seal_is_excluded_and_listed(smoke, tmp_path, capsys):
    suite, specs, store = smoke
    good, bad = specs[0].run_id, specs[1].run_id
    assert main(["verify", "--records", "--results", str(store.root)]) == 0
    out = capsys.readouterr().out
    assert "2 records under" in out and "2 good, 0 bad; 2 sealed, 0 unsealed" in out

    def edit(record):
        record["metrics"]["overall"]["ndcg@10"] = 0.5

    _edit(store, bad, edit)
    problem = "content does not match its seal (edited after it was written)"
    assert store.problem(bad) == problem and store.has(good)
    assert [r["run_id"] for r in store.records()] == [good]
    assert f"bench: skipping {store.record_path(bad)}: {problem}" in capsys.readouterr().err
    written = _tables(suite, specs, store, tmp_path / "tables")
    assert pd.read_csv(written["main.csv"])["Method"].tolist() == ["random"]
    assert "0.5000" not in written["main.md"].read_text() and bad not in written["main.md"].read_text()
    assert main(["verify", "--records", "--results", str(store.root)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"bench verify: {store.record_path(bad)}: {problem}"
    assert "2 records under" in lines[-1] and "1 good, 1 bad" in lines[-1] and len(lines) == 2


@pytest.mark.parametrize("damage, problem", [
    (lambda folder: (folder / "per_user.csv.gz").write_bytes(b"x"), "per_user.csv.gz does not match its seal"),
    (lambda folder: (folder / "per_user.csv.gz").unlink(), "per_user.csv.gz sidecar missing"),
    (lambda folder: (folder / PAIRS_FILE).unlink(), "pairs.csv.gz sidecar missing"),
    (lambda folder: shutil.copy(folder / "per_user.csv.gz", folder / PAIRS_FILE.replace("pairs", "x")), None),
])
def test_sidecars_are_sealed(tmp_path, damage, problem):
    from bench.spec import expand, load_suite

    spec = expand(load_suite("smoke"))[0]
    store = ResultStore(tmp_path)
    pairs = pd.DataFrame({"user": ["1"], "item": ["2"], "label": [1], "score": [0.5]})
    _write(store, spec, 0.2, {PAIRS_FILE: pairs})
    assert sorted(store.load(spec.run_id)["seal"]["files"]) == [PAIRS_FILE, "per_user.csv.gz"]
    damage(store.run_dir(spec.run_id))
    assert store.problem(spec.run_id) == problem  # a file that is no sidecar is not the seal's business


def test_a_sidecar_the_seal_does_not_name_is_a_problem(smoke):
    _, specs, store = smoke
    folder = store.run_dir(specs[0].run_id)
    shutil.copy(folder / "per_user.csv.gz", folder / PAIRS_FILE)
    assert store.problem(specs[0].run_id) == "pairs.csv.gz is not in the seal"
    _edit(store, specs[1].run_id, lambda r: r.update(seal=None))  # a seal emptied is no legacy record
    assert store.problem(specs[1].run_id) == "seal is malformed (expected algorithm, content, files)"


def test_an_unsealed_legacy_record_still_loads_with_one_notice(smoke, capsys):
    suite, specs, store = smoke
    for spec in specs:
        _edit(store, spec.run_id, lambda r: r.pop("seal"))
    capsys.readouterr()
    assert all(store.has(s.run_id) for s in specs) and store.has(specs[0].run_id)
    assert store.load(specs[0].run_id)["metrics"]["overall"]["n_users"] == N_USERS
    assert len(store.records()) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "without a seal" in err[0] and "scripts/seal_records.py" in err[0]
    assert main(["verify", "--records", "--results", str(store.root)]) == 0
    assert "0 sealed, 2 unsealed" in capsys.readouterr().out


def test_verify_records_checks_content_beyond_the_seal(smoke, capsys):
    """A record sealed over wrong content (its overall metric is not its per-user mean; its spec hashes to
    another run id) passes the seal and fails `bench verify --records`, which the seal script refuses."""
    seal_main = _seal_script().main

    _, specs, store = smoke
    path = store.record_path(specs[0].run_id)
    record = json.loads(path.read_text())
    record["metrics"]["overall"]["ndcg@10"] = 0.5
    store.write(specs[0].run_id, record, store.per_user(specs[0].run_id))  # sealed over the wrong metric
    assert store.has(specs[0].run_id)
    assert main(["verify", "--records", "--results", str(store.root)]) == 1
    out = capsys.readouterr().out
    assert f"{path}: metrics.overall.ndcg@10 is 0.5, the mean of its per_user.csv.gz column is 0.2" in out or \
        f"{path}: metrics.overall.ndcg@10 is 0.5, the mean of its per_user.csv.gz column is 0.19999" in out
    _edit(store, specs[1].run_id, lambda r: r.pop("seal"))
    other = store.run_dir("0123456789abcdef")
    shutil.copytree(store.run_dir(specs[1].run_id), other)
    _edit(store, "0123456789abcdef", lambda r: r.update(run_id="0123456789abcdef"))
    assert seal_main([str(store.root)]) == 1
    out = capsys.readouterr().out
    assert f"refused {path}: metrics.overall.ndcg@10 is 0.5" in out
    assert f"refused {other / 'record.json'}: its spec hashes to run id {specs[1].run_id}" in out
    assert "sealed 1, already sealed 0, refused 2" in out  # specs[1]'s own record, unsealed and sound
    assert "seal" not in json.loads((other / "record.json").read_text())


def _seal_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("seal_records", ROOT / "scripts" / "seal_records.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _committed(n_plain: int = 1, n_pairs: int = 1) -> list[Path]:
    """A few committed run folders: ranking runs and pointwise ones (with pairs.csv.gz)."""
    plain, pairs = [], []
    for folder in sorted(COMMITTED.iterdir()) if COMMITTED.is_dir() else []:
        if not (folder / "record.json").is_file():
            continue
        (pairs if (folder / PAIRS_FILE).is_file() else plain).append(folder)
    if len(plain) < n_plain or len(pairs) < n_pairs:
        pytest.skip("no committed run records to copy")
    return plain[:n_plain] + pairs[:n_pairs]


def test_seal_script_seals_committed_records_in_place_and_a_second_run_changes_nothing(tmp_path, capsys):
    seal_main = _seal_script().main

    results = tmp_path / "results"
    for folder in _committed():
        shutil.copytree(folder, results / "runs" / folder.name)
    paths = sorted((results / "runs").glob("*/record.json"))
    before = {p: p.read_bytes() for p in paths}
    assert seal_main([str(results)]) == 0
    out = capsys.readouterr().out
    unsealed = sum("seal" not in json.loads(b) for b in before.values())
    assert f"sealed {unsealed}, already sealed {len(paths) - unsealed}, refused 0" in out
    for path in paths:
        record = json.loads(path.read_text())
        seal = record.pop("seal")
        assert seal["content"] == record_digest(record)
        assert sorted(seal["files"]) == sorted(p.name for p in path.parent.glob("*.csv.gz"))
        if "seal" not in json.loads(before[path]):  # nothing but the seal was added
            assert json.dumps(record, indent=1, sort_keys=True).encode() == before[path]
    store = ResultStore(results)
    assert all(store.has(p.parent.name) for p in paths)
    sealed = {p: p.read_bytes() for p in paths}
    assert seal_main([str(results)]) == 0
    assert f"sealed 0, already sealed {len(paths)}, refused 0" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in paths} == sealed
    assert main(["verify", "--records", "--results", str(results)]) == 0


def test_every_committed_record_is_complete_sealed_or_not():
    """The store accepts every committed record as it is (sealed or legacy), so no `bench run` quarantines one."""
    store = ResultStore(ROOT / "results")
    paths = sorted(COMMITTED.glob("*/record.json")) if COMMITTED.is_dir() else []
    problems = {p.parent.name: store.problem(p.parent.name) for p in paths}
    assert {k: v for k, v in problems.items() if v is not None} == {}


def test_verify_needs_a_suite_or_records(capsys):
    assert main(["verify"]) == 2
    assert "--suite" in capsys.readouterr().err
