"""Splits saved to disk with membership and hash, identical for every method and every run seed.

Split randomness uses the split's own `seed` setting (default 0), never the run seed, so three run
seeds of every method are scored on one and the same split.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import BenchError, UnknownChoiceError
from bench.pointwise import ctr_description, ctr_temporal
from bench.types import INTER_COLUMNS, Dataset, Split

SEGMENT_DEFAULTS: dict[str, Any] = {
    "cold_user_threshold": 10,  # a valid/test user with fewer training interactions is "cold"
    "head_item_fraction": 0.2,  # the top 20% of items by training interactions are "head"
}

SPLIT_DEFAULTS: dict[str, dict[str, Any]] = {
    "temporal_loo": {"seed": 0},
    "random_loo": {"seed": 0},
    "half_history": {"seed": 0, "base": "temporal_loo", "drop_fraction": 0.5},
    "cold_users": {"seed": 0, "valid_fraction": 0.1, "test_fraction": 0.1, "keep_history": 3},
    # PtE long-tail (LLM-ESR): temporal leave-one-out; tail users < 10 interactions, tail items < 20;
    # eval_negatives 0 = full ranking (default), N > 0 = the LLM-ESR protocol (N sampled negatives per user)
    "longtail": {"seed": 0, "tail_user_threshold": 10, "tail_item_threshold": 20, "count_on": "all",
                 "eval_negatives": 0},
    # CoLLM (002) on ml-1m: the last 20 months, 10 / 5 / 5; ml-100k's 7 months: set 3.5 / 1.75 / 1.75
    "ctr_temporal": {"seed": 0, "label_threshold": 4, "train_months": 10.0, "valid_months": 5.0,
                     "test_months": 5.0, "warm_threshold": 3, "history": "window_start", "history_length": 10,
                     "max_valid_users": 0, "max_test_users": 0, "max_pairs_per_test_user": 0},
}

SPLIT_INFO = {
    "temporal_loo": "leave-one-out on time order: last interaction test, second last valid (default)",
    "random_loo": "leave-one-out with random held-out interactions (LLMInit code, RecBole RO order)",
    "half_history": "LLMInit 4.4: a leave-one-out split with half of each user's training interactions "
                    "removed (at least one kept)",
    "cold_users": "PtE: users sorted by last interaction; newest held out for valid/test, each keeping "
                  "only its first `keep_history` interactions in training",
    "longtail": "PtE/LLM-ESR long tail: temporal leave-one-out; user segment cold = tail user (< "
                "tail_user_threshold interactions), warm = head user; item tail = < tail_item_threshold "
                "interactions (count_on: all interactions, as LLM-ESR, or train)",
    "ctr_temporal": "CoLLM pointwise CTR: labelled pairs (rating >= threshold), temporal month windows",
}


def _ordered(inter: pd.DataFrame) -> pd.DataFrame:
    """Each user's interactions in time order (ties broken by item id, so the order is deterministic)."""
    return inter.sort_values(["user", "timestamp", "item"], kind="mergesort").reset_index(drop=True)


def _leave_one_out(inter: pd.DataFrame, order: pd.DataFrame) -> tuple[pd.DataFrame, ...]:
    """Last of `order` per user -> test, second last -> valid; users with < 3 interactions stay in train."""
    position = order.groupby("user").cumcount(ascending=False)
    size = order.groupby("user")["item"].transform("size")
    eligible = size >= 3
    test = order[(position == 0) & eligible]
    valid = order[(position == 1) & eligible]
    train = order[(position >= 2) | ~eligible]
    return train, valid, test


def temporal_loo(inter: pd.DataFrame, params: dict) -> tuple[pd.DataFrame, ...]:
    return _leave_one_out(inter, _ordered(inter))


def random_loo(inter: pd.DataFrame, params: dict) -> tuple[pd.DataFrame, ...]:
    rng = np.random.default_rng(params["seed"])
    shuffled = inter.assign(_r=rng.random(len(inter))).sort_values(["user", "_r"], kind="mergesort")
    return _leave_one_out(inter, shuffled.drop(columns="_r").reset_index(drop=True))


def half_history(inter: pd.DataFrame, params: dict) -> tuple[pd.DataFrame, ...]:
    base = params["base"]
    if base not in ("temporal_loo", "random_loo"):
        raise UnknownChoiceError("half_history base split", base, ["temporal_loo", "random_loo"])
    train, valid, test = SPLITTERS[base](inter, {"seed": params["seed"]})
    rng = np.random.default_rng(params["seed"] + 1)
    shuffled = train.assign(_r=rng.random(len(train))).sort_values(["user", "_r"], kind="mergesort")
    rank = shuffled.groupby("user").cumcount()
    size = shuffled.groupby("user")["item"].transform("size")
    keep = np.maximum(1, size - np.floor(size * params["drop_fraction"]).astype(int))
    kept = shuffled[rank < keep].drop(columns="_r")
    return _ordered(kept), valid, test


def longtail(inter: pd.DataFrame, params: dict) -> tuple[pd.DataFrame, ...]:
    """Temporal leave-one-out; the long-tail segments come from `longtail_segments`."""
    return _leave_one_out(inter, _ordered(inter))


def sampled_negative_exclusion(split: Split, item_ids: np.ndarray, positives: dict, exclude: dict,
                               n_negatives: int) -> dict[str, np.ndarray]:
    """Per test user, every catalogue position except its test positives and `n_negatives` items drawn
    uniformly (split seed, per user) from those it never interacted with: ranking over what is left is
    the sampled-negatives protocol, through the same full-ranking code."""
    n_items = len(item_ids)
    out = {}
    for user in sorted(positives):
        seen = np.union1d(exclude.get(user, np.array([], dtype=np.int64)), positives[user])
        pool = np.setdiff1d(np.arange(n_items), seen)
        digest = hashlib.sha256(f"{split.params.get('seed', 0)}|negatives|{user}".encode()).hexdigest()
        rng = np.random.default_rng(int(digest[:8], 16))
        keep = np.union1d(positives[user], rng.choice(pool, min(n_negatives, len(pool)), replace=False))
        out[user] = np.setdiff1d(np.arange(n_items), keep)
    return out


def longtail_segments(inter: pd.DataFrame, train: pd.DataFrame, eval_users, params: dict) -> tuple[pd.Series, ...]:
    """LLM-ESR segments: users with < tail_user_threshold interactions are tail (labelled "cold", head users
    "warm", the labels the metrics and tables already use); items with < tail_item_threshold are "tail"."""
    if params["count_on"] not in ("all", "train"):
        raise UnknownChoiceError("longtail count_on", params["count_on"], ["all", "train"])
    counted = inter if params["count_on"] == "all" else train
    user_n = counted.groupby("user").size().reindex(sorted(eval_users)).fillna(0)
    user_segment = pd.Series(np.where(user_n < params["tail_user_threshold"], "cold", "warm"),
                             index=user_n.index, name="segment")
    item_n = counted.groupby("item").size()
    items = sorted(set(inter["item"]))
    item_n = item_n.reindex(items).fillna(0)
    item_segment = pd.Series(np.where(item_n < params["tail_item_threshold"], "tail", "head"),
                             index=pd.Index(items), name="segment")
    return user_segment, item_segment


def cold_users(inter: pd.DataFrame, params: dict) -> tuple[pd.DataFrame, ...]:
    order = _ordered(inter)
    last = order.groupby("user")["timestamp"].max().reset_index().sort_values(["timestamp", "user"])
    users = last["user"].to_numpy()
    n_test = int(round(len(users) * params["test_fraction"]))
    n_valid = int(round(len(users) * params["valid_fraction"]))
    if n_test < 1 or n_valid < 1:
        raise BenchError(f"cold_users: valid_fraction/test_fraction leave no users among {len(users)}")
    test_users, valid_users = set(users[-n_test:]), set(users[-(n_test + n_valid):-n_test])
    position = order.groupby("user").cumcount()
    held = order["user"].isin(test_users | valid_users)
    history = position < params["keep_history"]
    train = order[~held | history]
    valid = order[held & ~history & order["user"].isin(valid_users)]
    test = order[held & ~history & order["user"].isin(test_users)]
    return train, valid, test


SPLITTERS: dict[str, Callable[[pd.DataFrame, dict], tuple[pd.DataFrame, ...]]] = {
    "temporal_loo": temporal_loo,
    "random_loo": random_loo,
    "half_history": half_history,
    "cold_users": cold_users,
    "longtail": longtail,
    "ctr_temporal": ctr_temporal,
}


def resolve_split_params(name: str, overrides: dict | None) -> dict[str, Any]:
    """Defaults + overrides (split and segment settings); unknown keys are errors listing valid ones."""
    if name not in SPLITTERS:
        raise UnknownChoiceError("split", name, SPLITTERS)
    params = {**SPLIT_DEFAULTS[name], **SEGMENT_DEFAULTS}
    for key, value in (overrides or {}).items():
        if key not in params:
            raise BenchError(f"unknown setting {key!r} for split {name!r}; valid settings: "
                             f"{', '.join(sorted(params))}")
        params[key] = value
    return params


def segments(train: pd.DataFrame, eval_users, params: dict) -> tuple[pd.Series, pd.Series]:
    """Warm/cold labels for evaluated users, head/tail labels for every training item (others: tail)."""
    counts = train.groupby("user").size()
    user_counts = counts.reindex(sorted(eval_users)).fillna(0)
    user_segment = pd.Series(np.where(user_counts < params["cold_user_threshold"], "cold", "warm"),
                             index=user_counts.index, name="segment")
    popularity = train.groupby("item").size().reset_index(name="n")
    popularity = popularity.sort_values(["n", "item"], ascending=[False, True])
    n_head = int(np.ceil(len(popularity) * params["head_item_fraction"]))
    item_segment = pd.Series("tail", index=popularity["item"].to_numpy(), name="segment")
    item_segment.iloc[:n_head] = "head"
    return user_segment, item_segment


def _frames_hash(frames: dict[str, pd.DataFrame | pd.Series]) -> str:
    digest = hashlib.sha256()
    for key in sorted(frames):
        digest.update(key.encode())
        digest.update(frames[key].to_csv(sep="\t").encode())
    return digest.hexdigest()


def make_split(dataset: Dataset, name: str, params: dict) -> Split:
    """Compute a split of `dataset` in memory (use `load_or_make_split` to share it through disk)."""
    inter = dataset.interactions[list(INTER_COLUMNS)]
    # duplicates of one (user, item) would let a test pair sit in training too: keep the latest only
    inter = _ordered(inter).drop_duplicates(["user", "item"], keep="last")
    # pointwise splits carry a `label` (all parts) and a pair `segment` (valid / test) column
    parts = [_ordered(p)[[*INTER_COLUMNS, *(c for c in ("label", "segment") if c in p)]]
             for p in SPLITTERS[name](inter, params)]
    train, valid, test = parts
    eval_users = set(valid["user"]) | set(test["user"])
    user_segment, item_segment = segments(train, eval_users, params)
    if name == "longtail":
        user_segment, item_segment = longtail_segments(inter, train, eval_users, params)
    content_hash = _frames_hash({"train": train, "valid": valid, "test": test,
                                 "users": user_segment, "items": item_segment})
    return Split(name=name, params=dict(params), train=train, valid=valid, test=test,
                 user_segment=user_segment, item_segment=item_segment, content_hash=content_hash,
                 dataset_hash=dataset.content_hash,
                 description=ctr_description(params) if name == "ctr_temporal" else SPLIT_INFO[name])


def split_dir(cache_dir: Path, dataset: Dataset, name: str, params: dict) -> Path:
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    return Path(cache_dir) / "splits" / dataset.content_hash[:16] / f"{name}-{key}"


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype={"user": str, "item": str, "rating": float, "timestamp": float,
                                              "segment": str})


def load_or_make_split(dataset: Dataset, name: str, params: dict, cache_dir: Path) -> Split:
    """The split from disk if saved (hash verified), else computed and saved atomically."""
    folder = split_dir(cache_dir, dataset, name, params)
    if (folder / "split.json").exists():
        info = json.loads((folder / "split.json").read_text())
        train, valid, test = (_read(folder / f"{p}.tsv") for p in ("train", "valid", "test"))
        users = pd.read_csv(folder / "user_segment.tsv", sep="\t", dtype=str, index_col=0)["segment"]
        items = pd.read_csv(folder / "item_segment.tsv", sep="\t", dtype=str, index_col=0)["segment"]
        users.index.name = items.index.name = None
        split = Split(name=name, params=info["params"], train=train, valid=valid, test=test,
                      user_segment=users, item_segment=items, content_hash=info["content_hash"],
                      dataset_hash=info["dataset_hash"], description=info["description"], path=folder)
        return split
    split = make_split(dataset, name, params)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-"))
    try:
        for part in ("train", "valid", "test"):
            getattr(split, part).to_csv(tmp / f"{part}.tsv", sep="\t", index=False)
        split.user_segment.to_csv(tmp / "user_segment.tsv", sep="\t")
        split.item_segment.to_csv(tmp / "item_segment.tsv", sep="\t")
        info = {"name": name, "params": params, "content_hash": split.content_hash,
                "dataset_hash": dataset.content_hash, "description": split.description,
                "counts": {p: int(len(getattr(split, p))) for p in ("train", "valid", "test")},
                "segments": {"users": split.user_segment.value_counts().to_dict(),
                             "items": split.item_segment.value_counts().to_dict()}}
        (tmp / "split.json").write_text(json.dumps(info, indent=1, sort_keys=True))
        try:
            os.replace(tmp, folder)
        except OSError:  # another process saved it first: theirs is identical by construction
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return load_or_make_split(dataset, name, params, cache_dir)
