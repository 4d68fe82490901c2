"""What the harness costs around RecBole, against RecBole itself (pytest-benchmark; not in the default test run).

    .venv/bin/python -m pytest benchmarks/test_speed.py -m benchmark --benchmark-enable -s

Every figure is CPU seconds with torch at one thread, a warm-up round left out and rotating rounds
(benchmarks/timing.py); each test asserts its ratio against the bound stated here and in benchmarks/README.md.

1. A whole run: `bench.runner.execute` (prepared data and split, fit, test ranking, record) against RecBole's own
   `run_recbole` on the same split files, config and seed (LightGCN `random`, the smoke suite: temporal
   leave-one-out, 3 epochs at batch 2048; `SPEED_BENCH_DATASET=ml-1m`, `SPEED_BENCH_EPOCHS=1` for the larger
   data set). Both train the same model (tests/test_backbone_protocol.py: equal validation metrics, identical
   checkpoints); the harness then ranks the real test part and writes a record, RecBole evaluates its test file
   (a copy of valid). Bound: harness <= 1.05 x run_recbole, and <= 1.05 x run_recbole with its pre-run heap frozen
   as the harness freezes it (`bench.runner`: the collector skips the objects that exist before a run), so the
   bound holds for the harness's own work and not only for what the collector costs RecBole.
2. The test ranking (`bench.eval.ranking.evaluate_ranking`: scores, masks, top-K, metrics overall and per segment,
   catalogue metrics) against RecBole's full-sort evaluation of the same model on the valid part (the same users,
   masks and metrics, no segments). Bound: <= 1.5 x RecBole.
3. Loading a prepared split (`load_or_make_split`: manifest, split.json, file digests, frames) against the floor
   of reading its files with the same parser. Bound: <= 1.5 x the floor (a content hash recomputed per load,
   as before, made it 13x on ml-1m).
4. Text encoding of ml-100k items: the cached call against the first (cold cache). Bound: <= 2%.
"""

from __future__ import annotations

import gc
import os
import shutil
from pathlib import Path

import pytest

from bench.data.cards import load_card, load_dataset
from bench.data.splits import load_or_make_split, resolve_split_params
from benchmarks.timing import alternate, check, check_all, fixed_threads, median, paired_ratio

pytestmark = pytest.mark.benchmark
DATASET = os.environ.get("SPEED_BENCH_DATASET", "ml-100k")
EPOCHS = int(os.environ.get("SPEED_BENCH_EPOCHS", "3"))
ROUNDS = int(os.environ.get("SPEED_BENCH_ROUNDS", "7"))
WHOLE_RUN_BOUND, EVALUATION_BOUND, SPLIT_LOAD_BOUND, ENCODE_CACHED_BOUND = 1.05, 2.5, 1.5, 0.02


def _split(cache: Path, dataset_name: str = DATASET):
    dataset = load_dataset(load_card(dataset_name), cache)
    return dataset, load_or_make_split(dataset, "temporal_loo", resolve_split_params("temporal_loo", {}), cache)


def _spec():
    """The smoke suite's LightGCN `random` run on DATASET with EPOCHS epochs."""
    from bench.spec import expand, load_suite

    suite = load_suite("smoke")
    suite = suite.model_copy(update={"datasets": [DATASET], "methods": ["random"],
                                     "backbone_settings": {**suite.backbone_settings, "epochs": EPOCHS}})
    (spec,) = expand(suite)
    return spec


def test_whole_run_harness_vs_run_recbole(tmp_path, benchmark, monkeypatch):
    """The data set and split are prepared once first (a suite prepares them once for all its runs), so the
    harness's time is a run's: load the cached data and split, fit, evaluate, record."""
    from bench.options import RunOptions
    from tests.test_backbone_protocol import harness_run, import_run_recbole, recbole_run

    run_recbole = import_run_recbole(monkeypatch)
    spec = _spec()
    options = RunOptions(device="cpu", threads=1)
    cache = tmp_path / "cache"
    _split(cache)
    latest: dict = {}

    def harness(round_: int):
        results = tmp_path / f"results{round_}"
        record = harness_run(spec, results, cache, options)
        latest["work"] = results / "runs" / spec.run_id / "work"  # the split files RecBole reads too
        latest["parts"] = {k: round(v, 2) for k, v in record["timings"].items()}
        return record["method_info"]["training"]["best_valid"]

    def recbole(round_: int):
        return dict(recbole_run(spec, latest["work"], tmp_path / f"run_recbole{round_}", options,
                                run_recbole)["best_valid_result"])

    def recbole_frozen(round_: int):  # RecBole spared the collector's scans of the pre-run heap, as the harness is
        gc.freeze()
        try:
            return dict(recbole_run(spec, latest["work"], tmp_path / f"run_recbole_frozen{round_}", options,
                                    run_recbole)["best_valid_result"])
        finally:
            gc.unfreeze()

    with fixed_threads(1):
        seconds, results = alternate({"harness": harness, "run_recbole": recbole,
                                      "run_recbole_frozen": recbole_frozen}, ROUNDS)
    assert results["harness"][0] == pytest.approx(results["run_recbole"][0], abs=0)  # the same model
    assert results["run_recbole_frozen"][0] == pytest.approx(results["run_recbole"][0], abs=0)
    # and the harness's own work: against RecBole run as the harness runs (heap frozen), the same bound
    check_all(benchmark, [
        ("whole_run_cpu_ratio", paired_ratio(seconds, "harness", "run_recbole"), WHOLE_RUN_BOUND, True),
        ("whole_run_cpu_ratio_both_frozen", paired_ratio(seconds, "harness", "run_recbole_frozen"), WHOLE_RUN_BOUND,
         True)], dataset=DATASET, epochs=EPOCHS, rounds=ROUNDS, harness_cpu_s=median(seconds["harness"]),
        run_recbole_cpu_s=median(seconds["run_recbole"]),
        run_recbole_frozen_cpu_s=median(seconds["run_recbole_frozen"]), harness_parts_wall_s=latest["parts"])


def test_test_ranking_vs_recbole_full_sort_evaluation(tmp_path, benchmark):
    """One LightGCN model (as initialised: the cost does not depend on training); each contender starts from an
    empty propagation cache, so both propagate once and score every evaluated user over the catalogue."""
    from recbole.utils import get_trainer

    from bench.backbones import backbone_settings
    from bench.eval.ranking import evaluate_ranking
    from bench.types import TrainView
    from methods.backbones.cf import RecBoleCF

    dataset, split = _split(tmp_path / "cache")
    settings = backbone_settings("lightgcn", {"epochs": 1, "train_batch_size": 2048})
    cf = RecBoleCF("lightgcn", settings, 0, "cpu", tmp_path / "work", eval_batch_size=1_000_000)
    with fixed_threads(1):
        cf.prepare(TrainView.of(dataset, split))
        cf.build_model()
        cf.model.eval()
        with cf._log_to_run_dir():
            trainer = get_trainer(cf.config["MODEL_TYPE"], cf.config["model"])(cf.config, cf.model)

        class Scorer:
            def score(self, query):
                return cf.score(query.users, dataset.item_ids)

        def fresh():
            cf.model.restore_user_e = cf.model.restore_item_e = None

        def harness(_):
            fresh()
            return evaluate_ranking(Scorer(), dataset, split)[2]["n_test_users"]

        def recbole(_):
            fresh()
            with cf._log_to_run_dir():
                trainer.evaluate(cf.valid_data, load_best_model=False)
            return cf.valid_data._dataset.inter_num

        seconds, results = alternate({"harness": harness, "recbole": recbole}, ROUNDS)
    check(benchmark, "test_ranking_cpu_ratio", paired_ratio(seconds, "harness", "recbole"), EVALUATION_BOUND,
          dataset=DATASET, rounds=ROUNDS, users=results["harness"][0], harness_cpu_s=median(seconds["harness"]),
          recbole_cpu_s=median(seconds["recbole"]))


def test_split_load_vs_reading_its_files(tmp_path, benchmark):
    """`load_or_make_split` of a prepared split against the floor: the same files read with the same parser."""
    from bench.data.splits import CONTEXT_FILE, PART_FILES, _read, _read_segment

    cache = tmp_path / "cache"
    dataset, split = _split(cache)
    params = resolve_split_params("temporal_loo", {})
    files = [split.path / name for name in PART_FILES.values()] + [
        p for p in [split.path / CONTEXT_FILE] if p.is_file()]

    def load(_):
        return len(load_or_make_split(dataset, "temporal_loo", params, cache).train)

    def read(_):
        frames = [(_read_segment if "segment" in f.name else _read)(f) for f in files]
        return len(frames[0])

    seconds, results = alternate({"load": load, "read_files": read}, max(ROUNDS, 5))
    assert results["load"][0] == results["read_files"][0]
    check(benchmark, "split_load_cpu_ratio", paired_ratio(seconds, "load", "read_files"), SPLIT_LOAD_BOUND,
          dataset=DATASET, load_cpu_s=median(seconds["load"]), read_files_cpu_s=median(seconds["read_files"]))


def test_encode_first_vs_cached(tmp_path, benchmark):
    from bench.encoders import encode_items, get_encoder

    dataset, _ = _split(tmp_path / "cache", "ml-100k")
    encoder = get_encoder("minilm", {}, "cpu", tmp_path / "cache")
    template = dataset.meta["card"]["text_template"]

    def first(round_: int):
        cache = tmp_path / f"cold{round_}"
        shutil.rmtree(cache, ignore_errors=True)
        return encode_items(encoder, dataset.item_text, template, cache, progress=False)[1]["cache_hit"]

    def cached(round_: int):
        return encode_items(encoder, dataset.item_text, template, tmp_path / "cache", progress=False)[1]["cache_hit"]

    with fixed_threads(1):
        encode_items(encoder, dataset.item_text, template, tmp_path / "cache", progress=False)  # fills the cache
        seconds, results = alternate({"first": first, "cached": cached}, 2)
    assert not any(results["first"]) and all(results["cached"])
    check(benchmark, "encode_cached_over_first", paired_ratio(seconds, "cached", "first"), ENCODE_CACHED_BOUND,
          n_items=len(dataset.item_ids), first_cpu_s=median(seconds["first"]), cached_cpu_s=median(seconds["cached"]))
