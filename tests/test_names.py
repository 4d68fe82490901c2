"""The display names the tables print (bench/report/names.yaml, `bench.report.labels.display`): every registry
entry, split, backbone, metric and segment has one; a name the file does not know prints as its id; two entries
that can run on one backbone never share a name; every entry has a paradigm, in the file's order; the key line
maps the names back to the ids; the file ships with the package."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib

from bench.backbones import BACKBONES
from bench.catalog import METHODS
from bench.data.splits import SPLITTERS
from bench.report.labels import (
    KINDS,
    RANKING_SEGMENTS,
    display,
    display_label,
    key_line,
    names,
    paradigm_of,
    paradigm_order,
    segment_name,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("kind,ids", [("method", METHODS.names()), ("split", list(SPLITTERS)),
                                      ("backbone", list(BACKBONES))])
def test_every_registry_entry_split_and_backbone_has_a_display_name(kind, ids):
    section = {"method": "methods", "split": "splits", "backbone": "backbones"}[kind]
    missing = [i for i in ids if i not in names()[section]]
    assert not missing, f"names.yaml {section} lacks {missing}"
    assert all(display(kind, i) and isinstance(display(kind, i), str) for i in ids)
    stale = sorted(set(names()[section]) - set(ids))  # a renamed or removed id left behind
    assert not stale, f"names.yaml {section} names ids that do not exist: {stale}"


def test_metrics_segments_and_the_fallback():
    assert display("metric", "ndcg@10") == "NDCG@10" and display("metric_short", "ndcg@10") == "N@10"
    assert display("metric", "recall@20") == "Recall@20" and display("metric_short", "recall@20") == "R@20"
    assert display("metric", "auc") == "AUC" and display("metric", "uauc") == "UAUC"
    assert all(display("segment", s) != s for s in RANKING_SEGMENTS)
    assert segment_name("user:cold") == "cold users" and segment_name("user:cold", "longtail") == "tail users"
    # a user's own method, an unknown metric: printed as they are
    assert display("method", "my-method") == "my-method" and display("metric", "foo@3") == "foo@3"
    with pytest.raises(ValueError, match="unknown kind"):
        display("nosuch", "x")
    assert set(KINDS) >= {"split", "method", "backbone", "metric", "metric_short", "segment"}


def test_labels_keep_their_suffix_with_known_settings_by_name():
    assert display_label("split", "cold_items [candidates=cold]") == "Cold items [cold candidates]"
    assert display_label("method", "llm2rec [train_dataset=ml-1m]") == "LLM2Rec [train_dataset=ml-1m]"
    assert display_label("method", "llminit-full (runs at d=384)") == "LLMInit-full (runs at d=384)"
    assert display_label("backbone", "lightgcn [embedding_size=64]") == "LightGCN [embedding_size=64]"


def test_entries_that_share_a_backbone_never_share_a_name():
    seen: dict[tuple[str, str], str] = {}
    for name in METHODS.names():
        for backbone in METHODS.get(name).backbones:
            key = (backbone, display("method", name))
            assert key not in seen, f"{name} and {seen[key]} both print as {key[1]} on {backbone}"
            seen[key] = name


def test_every_entry_has_a_paradigm_from_the_names_file_in_its_order():
    order = paradigm_order()
    assert order[0] == "ID" and len(order) == len(set(order))
    assert all(paradigm_of(name) in order for name in METHODS.names())
    assert [paradigm_of(m) for m in ("random", "llminit-var", "llm2rec", "pte-init", "tallrec", "collm-mf", "icl",
                                     "tallrec-rerank", "collm-mf-rerank", "ensemble-mf-tallrec")] == [
        "ID", "LLMInit", "LLM2Rec", "PtE", "TALLRec", "CoLLM", "ICL", "TALLRec", "CoLLM", "CoLLM"]


def test_the_key_line_maps_names_back_to_ids():
    key = key_line({"split": ["temporal_loo", "cold_items"], "method": ["random", "llminit-pca", "llminit-pca-seq",
                                                                         "my-method"],
                    "segment": [("user:cold", "longtail")]})
    assert key == ("Key: Warm (LOO) = temporal_loo; Cold items = cold_items; ID = random; "
                   "LLMInit-PCA = llminit-pca, llminit-pca-seq; tail users = user:cold")
    assert key_line({"method": ["my-method"]}) == ""


def test_the_names_file_ships_with_the_package():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["bench"]
    assert "report/names.yaml" in data
