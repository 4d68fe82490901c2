"""`--executor ray`: the smoke suite on a local Ray instance writes the same records as a local run."""

from __future__ import annotations

import time

import pytest

from bench.executors import run_specs, task_resources
from bench.options import RunOptions
from bench.records import ResultStore
from bench.spec import expand, load_suite, parse_overrides

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]'); --executor ray untested")


def test_task_resources_ask_for_gpus_only_where_there_are_some():
    from bench.catalog import METHODS

    specs = {s.method: s for s in expand(load_suite("sequential"))}
    assert METHODS.get("llm2rec-csft").resources == {"num_gpus": 1}
    assert task_resources(specs["llm2rec-csft"], 2, cluster_gpus=1) == {"num_cpus": 2, "num_gpus": 1}
    assert task_resources(specs["llm2rec-csft"], 2, cluster_gpus=0) == {"num_cpus": 2}
    assert task_resources(specs["random"], 1, cluster_gpus=4) == {"num_cpus": 1}


@pytest.mark.slow
def test_smoke_suite_on_local_ray_matches_local_run(tmp_path):
    specs = expand(load_suite("smoke"), parse_overrides(["backbone.epochs=2"]))
    cache = tmp_path / "cache"  # one cache both executors see
    local, on_ray = ResultStore(tmp_path / "local"), ResultStore(tmp_path / "ray")
    # one thread locally, as in each Ray task (1 CPU): the same float summation order
    assert run_specs(specs, local, cache, RunOptions(threads=1, progress=False))["done"] == len(specs)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        start = time.perf_counter()
        summary = run_specs(specs, on_ray, cache, RunOptions(threads=1, progress=False), executor="ray",
                            cpus_per_task=1)
        elapsed = time.perf_counter() - start
    finally:
        ray.shutdown()
    assert summary["failed"] == {} and summary["done"] == len(specs)
    print(f"ray smoke: {len(specs)} runs in {elapsed:.1f}s")
    for spec in specs:
        a, b = local.load(spec.run_id), on_ray.load(spec.run_id)
        assert a["spec"] == b["spec"] == spec.model_dump(mode="json")
        assert a["metrics"] == b["metrics"]  # identical, not merely close
        assert a["params"] == b["params"] and a["provenance"]["split_hash"] == b["provenance"]["split_hash"]
        assert local.per_user(spec.run_id).equals(on_ray.per_user(spec.run_id))
