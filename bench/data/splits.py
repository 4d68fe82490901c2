"""Splits saved to disk with membership and hash, identical for every method and every run seed.

Split randomness uses the split's own `seed` setting (default 0), never the run seed, so three run
seeds of every method are scored on one and the same split.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from bench.errors import BenchError, UnknownChoiceError
from bench.eval.pointwise import MONTH_SECONDS
from bench.hashing import derive_seed, json_hash, sha256_file, sha256_hex
from bench.settings import runtime_field, validate_settings
from bench.types import INTER_COLUMNS, Dataset, Split


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):  # pydantic would read true / false as 1 / 0
        raise ValueError("Input should be a number, not true or false")
    return value


Int = Annotated[int, BeforeValidator(_not_bool)]
Float = Annotated[float, BeforeValidator(_not_bool)]


class SplitSettings(BaseModel):
    """Settings every split has: its own seed and the two segment settings (warm/cold users, head/tail items)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    version: ClassVar[int] = 1

    seed: Int = Field(0, ge=0)  # the split's own randomness, never the run seed
    cold_user_threshold: Int = Field(10, ge=1)  # a valid/test user with fewer training interactions is "cold"
    head_item_fraction: Float = Field(0.2, gt=0, lt=1)  # the top 20% of items by training interactions: "head"


class RankingSplitSettings(SplitSettings):
    """A ranking split's evaluation option: `eval_negatives` 0 = full ranking over the catalogue (default);
    N > 0 = each test positive ranked among N sampled unseen items (RecBole 3.0's / LLM-ESR's sampled
    protocol, 1 + 99 with N = 99): a labelled option that inflates numbers, never the default."""

    eval_negatives: Int = Field(0, ge=0)


class TemporalLooSettings(RankingSplitSettings):
    pass


class RandomLooSettings(RankingSplitSettings):
    pass


class HalfHistorySettings(RankingSplitSettings):
    """LLMInit 4.4: drop `drop_fraction` of each user's training interactions (at least one kept).
    `rounding` of the dropped count: ceil (default; PROTOCOLS.md: a user with 3 training items keeps 1,
    so single-interaction users exist, as the paper says) or floor (version 1's behaviour)."""

    version: ClassVar[int] = 2  # 2: rounding ceil by default (version 1 rounded the dropped count down)

    base: Literal["temporal_loo", "random_loo"] = "temporal_loo"
    drop_fraction: Float = Field(0.5, gt=0, lt=1)
    rounding: Literal["ceil", "floor"] = "ceil"


class NewUsersFewShotSettings(RankingSplitSettings):
    """Few-shot new users (the harness's `cold_users` before version 2): the newest users held out for valid
    / test keep their first `keep_history` interactions in training; every later one is a positive."""

    valid_fraction: Float = Field(0.1, gt=0, lt=1)
    test_fraction: Float = Field(0.1, gt=0, lt=1)
    keep_history: Int = Field(3, ge=0)


class ColdUsersSettings(RankingSplitSettings):
    """PtE's cold-start users: users sorted by their last interaction; the newest `test_fraction` (test) and
    the `valid_fraction` before them (valid) are absent from training. Each one's last item is its held-out
    positive, predicted from its earlier sequence, which the method gets at inference only (the split's
    `context`). Only a method that can fold in an unseen user runs on it (sequential backbones)."""

    version: ClassVar[int] = 2  # 2: PtE's protocol (version 1 is `new_users_fewshot`)
    unseen_users: ClassVar[bool] = True  # test users have no training interaction at all

    valid_fraction: Float = Field(0.1, gt=0, lt=1)
    test_fraction: Float = Field(0.1, gt=0, lt=1)


class LongtailSettings(RankingSplitSettings):
    """PtE long-tail (LLM-ESR): temporal leave-one-out; tail users < 10 interactions, tail items < 20
    (eval_negatives N > 0: the LLM-ESR protocol, N sampled negatives per user)."""

    tail_user_threshold: Int = Field(10, ge=1)
    tail_item_threshold: Int = Field(20, ge=1)
    count_on: Literal["all", "train"] = "all"
    # "error": a split that evaluates no tail user or no tail item stops before training (its segments
    # would be empty); "allow" for studies that do not read the segments (a dense k-core). It decides only
    # whether to stop, never what a run computes: a runtime field, not part of run ids
    empty_segments: Literal["error", "allow"] = runtime_field("error")


class ColdItemsSettings(RankingSplitSettings):
    """Item cold start (issue 15.2): the newest `cold_fraction` of items by first interaction (ceil of items x
    fraction, ties by item id) lose every train and valid interaction of a temporal leave-one-out split; test
    keeps all. `candidates` (WarpRec's): rank all items, only cold ones (no training interaction) or only warm
    ones; a test positive outside the candidates is dropped, a user left without one is not evaluated."""

    # the evaluator masks each test user's removed (cold-item) interactions as it masks train and valid: they
    # are known interactions, not misses (the method never sees them)
    mask_removed: ClassVar[bool] = True

    cold_fraction: Float = Field(0.2, gt=0, lt=1)
    candidates: Literal["all", "cold", "warm"] = "all"


class GlobalTemporalSettings(RankingSplitSettings):
    """One cut-off time for every user (LensKit's / Cornac's / WarpRec's global time split; Ji et al., TOIS 2023:
    a per-user leave-last-out lets training see interactions later than some test ones). The newest
    `test_fraction` of interactions by time are test, the `valid_fraction` before them valid, everything earlier
    training: every training interaction is older than every valid one, and every valid one older than every
    test one (interactions at a cut's exact time all go to the later part). A valid or test user needs at least
    one earlier interaction to be scored (training for valid; training or valid for test): the rows of users
    first seen after a cut are dropped (no method has anything to score them from; the split's description
    counts them). Cold users arise naturally: a test user with few (or, seen only in valid, no) training
    interactions is in the cold segment (`cold_user_threshold`)."""

    valid_fraction: Float = Field(0.1, gt=0, lt=1)
    test_fraction: Float = Field(0.1, gt=0, lt=1)

    @model_validator(mode="after")
    def _fractions_leave_training(self):
        if self.valid_fraction + self.test_fraction >= 1:
            raise ValueError(f"valid_fraction + test_fraction = {self.valid_fraction + self.test_fraction:g} "
                             "leaves no training interaction; their sum must be below 1")
        return self


class CtrTemporalSettings(SplitSettings):
    """CoLLM (002) on ml-1m: the last 20 months, 10 / 5 / 5; ml-100k's 7 months: set 3.5 / 1.75 / 1.75.

    Every pair's history is computed on the full window before any subsampling and saved with the split
    (column `history`): `pair` (default, CoLLM's code) = the user's positives strictly earlier than the
    pair, held-out ones included; `window_start` = frozen at the start of the pair's window.
    `seed` draws the valid / test subsample (valid and test from separate streams: the test sample does
    not depend on `max_valid_users`); `shots` > 0 keeps N random training pairs drawn with `shots_seed`
    (TALLRec's few-shot protocol: one sample per seed), leaving valid, test and every history unchanged. The
    split then keeps all training pairs as `train_all` (saved, hash-checked): few-shot limits only what an LLM
    is tuned on; a CF model (CoLLM's encoder, pre-trained as the papers do) learns from all of them."""

    version: ClassVar[int] = 2  # 2: history `pair` by default; histories from the full window, before subsampling

    label_threshold: Int = Field(4, ge=1)
    train_months: Float = Field(10.0, gt=0)
    valid_months: Float = Field(5.0, gt=0)
    test_months: Float = Field(5.0, gt=0)
    warm_threshold: Int = Field(3, ge=1)
    history: Literal["window_start", "pair"] = "pair"
    history_length: Int = Field(10, ge=1)
    max_valid_users: Int = Field(0, ge=0)
    max_test_users: Int = Field(0, ge=0)
    max_pairs_per_test_user: Int = Field(0, ge=0)
    shots: Int = Field(0, ge=0)  # 0 = every training pair; N > 0 = N random training pairs (few-shot)
    shots_seed: Int = Field(0, ge=0)  # the few-shot sample's seed (never the valid / test sample's)


SPLIT_SETTINGS: dict[str, type[SplitSettings]] = {
    "temporal_loo": TemporalLooSettings,
    "random_loo": RandomLooSettings,
    "half_history": HalfHistorySettings,
    "cold_users": ColdUsersSettings,
    "new_users_fewshot": NewUsersFewShotSettings,
    "longtail": LongtailSettings,
    "cold_items": ColdItemsSettings,
    "ctr_temporal": CtrTemporalSettings,
    "global_temporal": GlobalTemporalSettings,
}
SEGMENT_KEYS = ("cold_user_threshold", "head_item_fraction")
# the defaults as plain dicts (derived from the models): segment settings, then each split's own
SEGMENT_DEFAULTS: dict[str, Any] = {k: SplitSettings.model_fields[k].default for k in SEGMENT_KEYS}
SPLIT_DEFAULTS: dict[str, dict[str, Any]] = {
    name: {k: v for k, v in cls().model_dump(mode="json").items() if k not in SEGMENT_KEYS}
    for name, cls in SPLIT_SETTINGS.items()}

SPLIT_INFO = {
    "temporal_loo": "leave-one-out on time order: last interaction test, second last valid (default)",
    "random_loo": "leave-one-out with random held-out interactions (LLMInit code, RecBole RO order)",
    "half_history": "LLMInit 4.4: a leave-one-out split with half of each user's training interactions "
                    "removed (rounded up by default: a user with 3 keeps 1; at least one kept)",
    "cold_users": "PtE: users sorted by last interaction; the newest held out of training for valid / test; "
                  "each one's last item predicted from its earlier sequence, given at inference only",
    "new_users_fewshot": "few-shot new users: users sorted by last interaction; the newest held out for "
                         "valid / test keep their first `keep_history` interactions in training, every later "
                         "one is a positive",
    "longtail": "PtE/LLM-ESR long tail: temporal leave-one-out; user segment cold = tail user (< "
                "tail_user_threshold interactions), warm = head user; item tail = < tail_item_threshold "
                "interactions (count_on: all interactions, as LLM-ESR, or train)",
    "cold_items": "item cold start: the newest cold_fraction of items by first interaction have every train and "
                  "valid interaction removed (temporal leave-one-out base); test keeps all; candidates: all, "
                  "cold or warm items",
    "global_temporal": "one cut-off time for all users: the newest test_fraction of interactions are test, the "
                       "valid_fraction before them valid, all earlier ones training (no training interaction is "
                       "later than a test one); users first seen after a cut dropped",
    "ctr_temporal": "CoLLM pointwise CTR: labelled pairs (rating >= threshold), temporal month windows; "
                    "histories of earlier positives; optional few-shot training sample (TALLRec)",
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
    keep = np.maximum(1, size - dropped_count(size, params["drop_fraction"], params.get("rounding", "floor")))
    kept = shuffled[rank < keep].drop(columns="_r")
    return _ordered(kept), valid, test


def dropped_count(size, fraction: float, rounding: str):
    """How many of `size` training interactions half_history drops: ceil or floor of size x fraction.
    ceil ignores float noise (0.3 x 10 is 3, not 4); floor is version 1's expression, bit for bit."""
    if rounding not in ("ceil", "floor"):
        raise UnknownChoiceError("half_history rounding", rounding, ["ceil", "floor"])
    size = np.asarray(size)
    if rounding == "floor":
        return np.floor(size * fraction).astype(int)
    return np.ceil(np.round(size * fraction, 9)).astype(int)


def half_history_description(params: dict, train: pd.DataFrame, eval_users) -> str:
    counts = train.groupby("user").size().reindex(sorted(eval_users)).fillna(0)
    single = int((counts == 1).sum())
    return (f"LLMInit 4.4: {params['base']} with {params['drop_fraction']:g} of each user's training "
            f"interactions removed (count rounded {'up' if params['rounding'] == 'ceil' else 'down'}, at "
            f"least one kept); {single} of {len(counts)} evaluated users keep a single training interaction")


# ------------------------------------------------------------------------------------------ ctr_temporal
def _pair_histories(window: pd.DataFrame, part: np.ndarray, bounds: dict[str, float], mode: str,
                    length: int) -> list[str]:
    """Each pair's history (JSON list of item ids, oldest first, last `length`): the user's positives of
    the whole window strictly earlier than the pair (training pairs always; valid / test with `pair`), or
    (valid / test with `window_start`) every positive up to the start of the pair's window."""
    pos = window[window["label"] == 1]
    by_user = {u: (g["timestamp"].to_numpy(), g["item"].to_numpy()) for u, g in pos.groupby("user", sort=False)}
    empty = (np.zeros(0), np.zeros(0, dtype=object))
    out = []
    for user, ts, where in zip(window["user"].to_numpy(), window["timestamp"].to_numpy(), part):
        times, items = by_user.get(user, empty)
        if where == "train" or mode == "pair":
            n = int(np.searchsorted(times, ts, side="left"))
        else:
            n = int(np.searchsorted(times, bounds[where], side="right"))
        out.append(json.dumps([str(i) for i in items[max(0, n - length):n]], separators=(",", ":")))
    return out


def ctr_temporal(inter: pd.DataFrame, params: dict) -> tuple[pd.DataFrame, ...]:
    """CoLLM's split: the last train+valid+test months; first part train, middle valid, last test.

    No k-core: cold users and items stay in valid and test. In this order, so that nothing drawn later
    changes what came before: (1) every pair's `history` from the full window; (2) the pair segments
    (warm / cold / other) from the full training window; (3) the valid users (`max_valid_users`, its own
    stream of `seed`), the test users and pairs (`max_test_users`, `max_pairs_per_test_user`, `seed`) and the
    few-shot training sample (`shots`, `shots_seed`). The test sample is thus fixed for every run seed,
    shot count and few-shot seed, and no subsampling removes a positive from any history. With a few-shot
    sample, the training pairs it was drawn from are returned too (`{"train_all": ...}`).
    """
    if params["history"] not in ("window_start", "pair"):
        raise BenchError(f"ctr_temporal: unknown history {params['history']!r}; valid: window_start, pair")
    end = float(inter["timestamp"].max())
    t_test = end - params["test_months"] * MONTH_SECONDS
    t_valid = t_test - params["valid_months"] * MONTH_SECONDS
    t_start = t_valid - params["train_months"] * MONTH_SECONDS
    if t_start < float(inter["timestamp"].min()) - MONTH_SECONDS:
        raise BenchError(f"ctr_temporal: {params['train_months']}+{params['valid_months']}+"
                         f"{params['test_months']} months reach before the first rating; the data spans "
                         f"{(end - float(inter['timestamp'].min())) / MONTH_SECONDS:.1f} months")
    window = inter[inter["timestamp"] > t_start].assign(
        label=lambda f: (f["rating"] >= params["label_threshold"]).astype(int))
    window = window.sort_values(["user", "timestamp", "item"], kind="mergesort").reset_index(drop=True)
    ts = window["timestamp"].to_numpy()
    part = np.where(ts <= t_valid, "train", np.where(ts <= t_test, "valid", "test"))
    window["history"] = _pair_histories(window, part, {"valid": t_valid, "test": t_test}, params["history"],
                                        int(params["history_length"]))
    train, valid, test = (window[part == name].reset_index(drop=True) for name in ("train", "valid", "test"))

    user_n = train.groupby("user").size()
    item_n = train.groupby("item").size()

    def segment(frame: pd.DataFrame) -> pd.DataFrame:
        nu = frame["user"].map(user_n).fillna(0).to_numpy()
        ni = frame["item"].map(item_n).fillna(0).to_numpy()
        seg = np.where((nu > params["warm_threshold"]) & (ni > params["warm_threshold"]), "warm",
                       np.where((nu == 0) | (ni == 0), "cold", "other"))
        return frame.assign(segment=seg)

    valid, test = segment(valid), segment(test)

    def keep_users(frame: pd.DataFrame, limit: int, rng) -> pd.DataFrame:
        users = np.sort(frame["user"].unique())
        if 0 < limit < len(users):
            frame = frame[frame["user"].isin(set(rng.choice(users, size=limit, replace=False)))]
        return frame

    # valid: its own stream; test: default_rng(seed), drawn exactly as version 1 drew it without max_valid_users
    valid = keep_users(valid, int(params["max_valid_users"]), np.random.default_rng([params["seed"], 1]))
    rng = np.random.default_rng(params["seed"])
    test = keep_users(test, int(params["max_test_users"]), rng)
    cap = int(params["max_pairs_per_test_user"])
    if cap > 0:  # a fixed random subset of each test user's pairs
        keys = rng.random(len(test))
        rank = test.assign(_k=keys).groupby("user")["_k"].rank(method="first")
        test = test[rank.to_numpy() <= cap]
    shots = int(params.get("shots", 0))
    if 0 < shots < len(train):  # TALLRec's few-shot sample: N training pairs, one sample per shots_seed
        rows = np.random.default_rng([params.get("shots_seed", 0), 2]).choice(len(train), size=shots, replace=False)
        return train.iloc[np.sort(rows)], valid, test, {"train_all": train}
    return train, valid, test


def ctr_description(params: dict, train: pd.DataFrame, test: pd.DataFrame) -> str:
    history = ("every earlier positive of the window, held-out ones included (CoLLM code)"
               if params["history"] == "pair" else "positives before the pair's window only")
    return (f"pointwise CTR (CoLLM): label = rating >= {params['label_threshold']}; the last "
            f"{params['train_months']} / {params['valid_months']} / {params['test_months']} months "
            f"(of {MONTH_SECONDS / 86400:.2f} days) as train / valid / test, no k-core; history = {history}, "
            f"last {params['history_length']}, computed on the full window before any subsampling; "
            f"warm pair: user and item > {params['warm_threshold']} training pairs, cold: either absent"
            + (f"; test users subsampled to {params['max_test_users']}" if params["max_test_users"] else "")
            + (f"; valid users subsampled to {params['max_valid_users']}" if params["max_valid_users"] else "")
            + (f"; at most {params['max_pairs_per_test_user']} random test pairs per user"
               if params["max_pairs_per_test_user"] else "")
            + (f"; test sample (split seed {params['seed']}, the same for every run seed): {len(test)} pairs of "
               f"{test['user'].nunique()} users")
            + (f"; few-shot training (TALLRec): {len(train)} random training pairs (shots_seed "
               f"{params['shots_seed']})" if params.get("shots") else ""))


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
        rng = np.random.default_rng(derive_seed(split.params.get('seed', 0), "negatives", user))
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


def _held_out_users(inter: pd.DataFrame, params: dict) -> tuple[pd.DataFrame, set, set]:
    """(interactions in time order, valid users, test users): users sorted by their last interaction, the
    newest `test_fraction` for test and the `valid_fraction` before them for valid."""
    order = _ordered(inter)
    last = order.groupby("user")["timestamp"].max().reset_index().sort_values(["timestamp", "user"])
    users = last["user"].to_numpy()
    n_test = int(round(len(users) * params["test_fraction"]))
    n_valid = int(round(len(users) * params["valid_fraction"]))
    if n_test < 1 or n_valid < 1:
        raise BenchError(f"valid_fraction={params['valid_fraction']} and test_fraction={params['test_fraction']} "
                         f"of {len(users)} users hold out no {'test' if n_test < 1 else 'valid'} user; "
                         f"raise them (each holds out round(users x fraction) users)")
    return order, set(users[-(n_test + n_valid):-n_test]), set(users[-n_test:])


def new_users_fewshot(inter: pd.DataFrame, params: dict) -> tuple[pd.DataFrame, ...]:
    order, valid_users, test_users = _held_out_users(inter, params)
    position = order.groupby("user").cumcount()
    held = order["user"].isin(test_users | valid_users)
    history = position < params["keep_history"]
    train = order[~held | history]
    valid = order[held & ~history & order["user"].isin(valid_users)]
    test = order[held & ~history & order["user"].isin(test_users)]
    return train, valid, test


def cold_users(inter: pd.DataFrame, params: dict) -> tuple:
    """(train, valid, test, {"context": ...}): held-out users' last items are valid / test; their earlier
    interactions are the context (column `part`: valid / test), never training data."""
    order, valid_users, test_users = _held_out_users(inter, params)
    held = order["user"].isin(valid_users | test_users)
    last = order.groupby("user").cumcount(ascending=False) == 0
    valid = order[held & last & order["user"].isin(valid_users)]
    test = order[held & last & order["user"].isin(test_users)]
    context = order[held & ~last].copy()
    context["part"] = np.where(context["user"].isin(test_users), "test", "valid")
    return order[~held], valid, test, {"context": context}


# ------------------------------------------------------------------------------------- global_temporal
def global_cuts(inter: pd.DataFrame, params: dict) -> tuple[float, float]:
    """(valid cut, test cut): the timestamps at which the newest valid_fraction + test_fraction and the newest
    test_fraction of interactions begin (positions ceil(n x (1 - fraction)) of the time order). Parts are
    `timestamp < valid cut` (train), `valid cut <= timestamp < test cut` (valid), `timestamp >= test cut`."""
    times = np.sort(inter["timestamp"].to_numpy())
    n = len(times)

    def cut(fraction: float) -> float:
        return float(times[min(n - 1, int(np.ceil(np.round(n * (1 - fraction), 9))))])

    return cut(params["valid_fraction"] + params["test_fraction"]), cut(params["test_fraction"])


def global_temporal(inter: pd.DataFrame, params: dict) -> tuple[pd.DataFrame, ...]:
    """Train / valid / test by two global cut-off times (`global_cuts`); a valid user without a training
    interaction, or a test user without a training or valid one, is dropped."""
    order = _ordered(inter)
    valid_cut, test_cut = global_cuts(order, params)
    if valid_cut == test_cut:
        raise BenchError(f"valid_fraction={params['valid_fraction']} and test_fraction={params['test_fraction']}: "
                         f"both cuts fall on the same time ({valid_cut:g}), so the valid part is empty; raise "
                         f"valid_fraction (the data's timestamps are too coarse for it)")
    train = order[order["timestamp"] < valid_cut]
    valid = order[(order["timestamp"] >= valid_cut) & (order["timestamp"] < test_cut)]
    test = order[order["timestamp"] >= test_cut]
    valid = valid[valid["user"].isin(set(train["user"]))]
    test = test[test["user"].isin(set(train["user"]) | set(valid["user"]))]
    return train, valid, test


def global_temporal_description(params: dict, inter: pd.DataFrame, valid: pd.DataFrame,
                                test: pd.DataFrame) -> str:
    """The protocol in words with its cut-off times and the users first seen after a cut that were dropped."""
    order = _ordered(inter)
    valid_cut, test_cut = global_cuts(order, params)
    seen_valid = order[order["timestamp"] < valid_cut]["user"].nunique()
    after_valid = order[(order["timestamp"] >= valid_cut) & (order["timestamp"] < test_cut)]["user"].nunique()
    after_test = order[order["timestamp"] >= test_cut]["user"].nunique()
    dropped = (after_valid - valid["user"].nunique()) + (after_test - test["user"].nunique())
    return (f"{SPLIT_INFO['global_temporal']}; valid from t={valid_cut:g}, test from t={test_cut:g}; "
            f"{seen_valid} users in training, {valid['user'].nunique()} valid and {test['user'].nunique()} test "
            f"users; {dropped} valid / test users without an earlier interaction dropped")


# ------------------------------------------------------------------------------------------ cold_items
def cold_item_ids(inter: pd.DataFrame, fraction: float) -> list[str]:
    """The newest ceil(n_items x fraction) items by first interaction, oldest first (n_items: the items with an
    interaction; equal first times ordered by item id as text). ceil ignores float noise (0.2 x 40 is 8)."""
    first = inter.groupby("item")["timestamp"].min().reset_index().sort_values(["timestamp", "item"],
                                                                               kind="mergesort")
    n_cold = int(np.ceil(np.round(len(first) * fraction, 9)))
    if n_cold >= len(first):
        raise BenchError(f"cold_fraction={fraction} makes all {len(first)} items cold; lower it (it holds out "
                         f"ceil(items x fraction) items)")
    return first["item"].to_list()[len(first) - n_cold:]


def cold_items(inter: pd.DataFrame, params: dict) -> tuple[pd.DataFrame, ...]:
    """Temporal leave-one-out, then every train and valid interaction with a cold item removed; test keeps
    every test interaction (cold and warm items). A user left with no training interaction (all of them were
    with cold items) is a cold user, outside this split's question: its valid and test rows are dropped."""
    cold = set(cold_item_ids(inter, params["cold_fraction"]))
    train, valid, test = _leave_one_out(inter, _ordered(inter))
    train = train[~train["item"].isin(cold)]
    valid = valid[~valid["item"].isin(cold)]
    users = set(train["user"])
    return train, valid[valid["user"].isin(users)], test[test["user"].isin(users)]


def cold_items_description(params: dict, inter: pd.DataFrame, train: pd.DataFrame,
                           test: pd.DataFrame) -> str:
    """The protocol in words, with the counts a reader needs: cold items, test interactions on them, users
    left out, and items without training interactions that are not among the newest (cold by accident)."""
    cold = set(cold_item_ids(inter, params["cold_fraction"]))
    _, _, base_test = _leave_one_out(inter, _ordered(inter))
    left_out = base_test["user"].nunique() - test["user"].nunique()
    unseen = set(inter["item"]) - set(train["item"]) - cold
    on_cold = test["item"].isin(cold)
    return (f"item cold start: the newest {params['cold_fraction']:g} of items by first interaction "
            f"({len(cold)} of {inter['item'].nunique()}, rounded up) have every train and valid interaction "
            f"removed; base temporal leave-one-out; test keeps all: {int(on_cold.sum())} of {len(test)} test "
            f"interactions are on cold items ({test.loc[on_cold, 'item'].nunique()} cold items); "
            f"{left_out} user{'' if left_out == 1 else 's'} left without a training interaction not evaluated"
            + (f"; {len(unseen)} other items have no training interaction (segment cold too)" if unseen else "")
            + f"; candidates: {params['candidates']}")


# a splitter returns (train, valid, test), or (train, valid, test, extras) with the frames only some splits have:
# "context" (held-out users' interactions known at inference, column `part`), "train_all" (all training pairs
# before a few-shot sample)
SPLITTERS: dict[str, Callable[[pd.DataFrame, dict], tuple]] = {
    "temporal_loo": temporal_loo,
    "random_loo": random_loo,
    "half_history": half_history,
    "cold_users": cold_users,
    "new_users_fewshot": new_users_fewshot,
    "longtail": longtail,
    "cold_items": cold_items,
    "ctr_temporal": ctr_temporal,
    "global_temporal": global_temporal,
}


def resolve_split_params(name: str, overrides: dict | None) -> dict[str, Any]:
    """Defaults + overrides (split and segment settings), validated by the split's settings model: an unknown
    key or a bad value (type, range, choice) is a one-line BenchError naming the split, the key and what is
    valid. Returns the JSON dump (keys: the split's own settings, then the segment settings)."""
    if name not in SPLITTERS:
        raise UnknownChoiceError("split", name, SPLITTERS)
    cls = SPLIT_SETTINGS[name]
    for key in overrides or {}:
        if key not in cls.model_fields:
            raise BenchError(f"unknown setting {key!r} for split {name!r}; valid settings: "
                             f"{', '.join(sorted(cls.model_fields))}")
    dumped = validate_settings(cls, overrides, f"split {name!r}").model_dump(mode="json")
    return {**{k: v for k, v in dumped.items() if k not in SEGMENT_KEYS}, **{k: dumped[k] for k in SEGMENT_KEYS}}


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


EMPTY_CONTEXT = pd.DataFrame({**{c: pd.Series(dtype=object if c in ("user", "item") else float)
                                 for c in INTER_COLUMNS}, "part": pd.Series(dtype=object)})


def _hashed_frames(train, valid, test, users, items, context) -> dict:
    """The frames a split's content hash covers; the context only where a split has one (so the hashes of
    splits without one are what they always were)."""
    frames = {"train": train, "valid": valid, "test": test, "users": users, "items": items}
    if len(context):
        frames["context"] = context
    return frames


def split_hash(split: Split) -> str:
    """The content hash of a split's frames (what `make_split` records as `content_hash`)."""
    return _frames_hash(_hashed_frames(split.train, split.valid, split.test, split.user_segment,
                                       split.item_segment, split.context))


def train_all_hash(frame: pd.DataFrame) -> str:
    """The hash of a few-shot split's `train_all` (recorded in split.json beside the content hash, which it
    does not enter: a few-shot split hashes as it did before `train_all` was kept, so no stored record's
    `split_hash` moves; `train_all` follows from the window settings that already define the split)."""
    return _frames_hash({"train_all": frame})


# why a part can be empty, per split (the hint of the error)
_EMPTY_HINTS = {
    "loo": "leave-one-out holds out the last two interactions of each user with at least 3; check the "
           "dataset's filters (min_rating, kcore)",
    "cold_users": "no user is held out; change valid_fraction / test_fraction",
    "new_users_fewshot": "the held-out users have no interactions after the first keep_history; lower "
                         "keep_history, or change valid_fraction / test_fraction",
    "cold_items": "leave-one-out holds out the last two interactions of each user with at least 3, then removes "
                  "every cold item from train and valid; lower cold_fraction or check the dataset's filters",
    "global_temporal": "the part after its cut-off time has no interaction of a user seen before it; change "
                       "valid_fraction / test_fraction",
    "ctr_temporal": "no rating falls in that part's month window; change train_months / valid_months / "
                    "test_months to fit the data's time span",
}


def _check_thin(where: str, name: str, params: dict, parts: dict[str, pd.DataFrame],
                user_segment: pd.Series, item_segment: pd.Series) -> None:
    """BenchError when a part is empty, or (longtail) when no tail user or no tail item is evaluated."""
    empty = [part for part, frame in parts.items() if frame.empty]
    if empty:
        hint = _EMPTY_HINTS.get(name, _EMPTY_HINTS["loo"])
        raise BenchError(f"{where}: the {' and '.join(empty)} part{'s are' if len(empty) > 1 else ' is'} "
                         f"empty; {hint}")
    if name == "longtail" and params.get("empty_segments", "error") == "error":
        test = parts["test"]
        tail_users = set(user_segment.index[user_segment == "cold"]) & set(test["user"])
        if not tail_users:
            raise BenchError(f"{where}: no tail user is evaluated (every test user has at least "
                             f"tail_user_threshold={params['tail_user_threshold']} interactions, counted on "
                             f"{params['count_on']}); raise tail_user_threshold (or empty_segments: allow)")
        if not test["item"].isin(set(item_segment.index[item_segment == "tail"])).any():
            raise BenchError(f"{where}: no tail item is evaluated (every test item has at least "
                             f"tail_item_threshold={params['tail_item_threshold']} interactions, counted on "
                             f"{params['count_on']}); raise tail_item_threshold (or empty_segments: allow)")


def make_split(dataset: Dataset, name: str, params: dict) -> Split:
    """Compute a split of `dataset` in memory (use `load_or_make_split` to share it through disk).

    `params` are validated (`resolve_split_params`); an empty train / valid / test part, or a longtail split
    without tail users or tail items among the evaluated ones, is a BenchError naming the dataset, the split
    and its settings."""
    params = resolve_split_params(name, params)
    where = f"dataset {dataset.name!r}, split {name!r} {json.dumps(params, sort_keys=True)}"
    inter = dataset.interactions[list(INTER_COLUMNS)]
    # duplicates of one (user, item) would let a test pair sit in training too: keep the latest only
    inter = _ordered(inter).drop_duplicates(["user", "item"], keep="last")
    try:
        made = SPLITTERS[name](inter, params)
    except BenchError as exc:
        raise BenchError(f"{where}: {str(exc).removeprefix(f'{name}: ')}") from None
    extras = made[3] if len(made) > 3 else {}
    unknown = set(extras) - {"context", "train_all"}
    if unknown:
        raise RuntimeError(f"splitter {name!r} returned unknown frames {sorted(unknown)}")

    def columns(p: pd.DataFrame) -> pd.DataFrame:
        # pointwise splits carry a `label` (all parts) and a pair `segment` (valid / test) column
        return _ordered(p)[[*INTER_COLUMNS, *(c for c in ("label", "segment", "history") if c in p)]]

    train, valid, test = (columns(p) for p in made[:3])
    context = _ordered(extras["context"])[[*INTER_COLUMNS, "part"]] if "context" in extras else EMPTY_CONTEXT
    train_all = columns(extras["train_all"]) if "train_all" in extras else None
    eval_users = set(valid["user"]) | set(test["user"])
    user_segment, item_segment = segments(train, eval_users, params)
    if name == "longtail":
        user_segment, item_segment = longtail_segments(inter, train, eval_users, params)
    _check_thin(where, name, params, {"train": train, "valid": valid, "test": test}, user_segment, item_segment)
    content_hash = _frames_hash(_hashed_frames(train, valid, test, user_segment, item_segment, context))
    description = (ctr_description(params, train, test) if name == "ctr_temporal"
                   else half_history_description(params, train, eval_users) if name == "half_history"
                   else cold_items_description(params, inter, train, test) if name == "cold_items"
                   else global_temporal_description(params, inter, valid, test) if name == "global_temporal"
                   else SPLIT_INFO[name])
    return Split(name=name, params=dict(params), train=train, valid=valid, test=test,
                 user_segment=user_segment, item_segment=item_segment, content_hash=content_hash,
                 dataset_hash=dataset.content_hash, description=description, context=context, train_all=train_all)


def split_dir(cache_dir: Path, dataset: Dataset, name: str, params: dict) -> Path:
    key = json_hash(params, 12, compact=False)
    return Path(cache_dir) / "splits" / dataset.content_hash[:16] / f"{name}-{key}"


CONTEXT_FILE = "context.tsv"  # held-out users' interactions known at inference only (cold_users)
TRAIN_ALL_FILE = "train_all.tsv"  # all training pairs before the few-shot sample (ctr_temporal, shots > 0)
# split.json's layout: 2 = a few-shot split saves its train_all (a few-shot split saved before is rebuilt: its
# frames and content hash are the same, and train_all is added); 3 = the files were read back and hashed to the
# recorded content hash before the folder was published, so a load whose files match their recorded sha256
# needs no re-hash (a layout-2 folder is still read back and re-hashed on every load, as before)
LAYOUT = 3
VOUCHED_LAYOUT = 3  # from this layout on, matching file digests stand for the content hash
PART_FILES = {"train": "train.tsv", "valid": "valid.tsv", "test": "test.tsv", "user_segment": "user_segment.tsv",
              "item_segment": "item_segment.tsv"}


def _read(source) -> pd.DataFrame:
    # round_trip: floats read back bit for bit, so the recomputed hash matches the recorded one
    return pd.read_csv(source, sep="\t", float_precision="round_trip",
                       dtype={"user": str, "item": str, "rating": float, "timestamp": float, "segment": str,
                              "history": str})


def _read_segment(source) -> pd.Series:
    """A segment file as written: the index keeps the name in its header ("user" for users, none for items),
    as the in-memory series had, so the frames hash back to the recorded content hash."""
    return pd.read_csv(source, sep="\t", dtype=str, index_col=0)["segment"]


class _StaleSplit(Exception):
    """A saved split that cannot be used: the message says why."""


def _read_files(folder: Path, names: list[str]) -> tuple[dict[str, pd.DataFrame | pd.Series], dict[str, str]]:
    """The split's frames from `names` (part files, segments, context, train_all) and each file's sha256,
    from one read of its bytes."""
    import io

    frames: dict[str, pd.DataFrame | pd.Series] = {}
    digests: dict[str, str] = {}
    parts = {file: part for part, file in PART_FILES.items()} | {CONTEXT_FILE: "context",
                                                                  TRAIN_ALL_FILE: "train_all"}
    for file in names:
        data = (folder / file).read_bytes()
        digests[file] = sha256_hex(data)
        part = parts[file]
        frames[part] = (_read_segment if part.endswith("_segment") else _read)(io.BytesIO(data))
    return frames, digests


def _load_saved(folder: Path, dataset: Dataset, name: str, params: dict) -> Split:
    """The split saved in `folder`, verified: made from `dataset` with `params` and each file as recorded.
    A layout-3 folder whose files all match their recorded sha256 is the split its content hash names (the
    read-back was hashed once, before publishing: `_write`); an older folder, or one without recorded file
    digests, is re-hashed from the frames read back. `_StaleSplit` (why) otherwise."""
    try:
        info = json.loads((folder / "split.json").read_text())
        if not isinstance(info, dict):
            raise ValueError("split.json is not a mapping")
        if info.get("dataset_hash") != dataset.content_hash:
            raise _StaleSplit(f"was made from another dataset (dataset hash {str(info.get('dataset_hash'))[:16]}, "
                              f"expected {dataset.content_hash[:16]})")
        if info.get("name") != name or info.get("params") != params:
            raise _StaleSplit("was made with other settings than its folder name says")
        if params.get("shots") and info.get("layout", 1) < 2:
            raise _StaleSplit(f"was saved before few-shot splits kept all training pairs ({TRAIN_ALL_FILE})")
        recorded = info.get("files") or {}
        names = list(PART_FILES.values()) + [f for f in (CONTEXT_FILE, TRAIN_ALL_FILE) if f in recorded]
        frames, digests = _read_files(folder, names)

        def digest_of(file: str) -> str | None:  # a recorded file that is no frame (none today) is hashed too
            if file in digests:
                return digests[file]
            return sha256_file(folder / file) if (folder / file).is_file() else None

        changed = [file for file, digest in recorded.items() if digest_of(file) != digest]
    except _StaleSplit:
        raise
    except Exception as exc:  # a missing, truncated or garbled file
        raise _StaleSplit(f"cannot be read ({type(exc).__name__}: {exc})") from None
    users, items = frames.pop("user_segment"), frames.pop("item_segment")
    split = Split(name=name, params=info["params"], **frames, user_segment=users, item_segment=items,
                  content_hash=info.get("content_hash"), dataset_hash=info["dataset_hash"],
                  description=info.get("description", ""), path=folder)
    if changed:
        raise _StaleSplit(f"does not match its recorded hash ({', '.join(changed)} changed)")
    vouched = info.get("layout", 1) >= VOUCHED_LAYOUT and all(file in recorded for file in names)
    if not vouched and split_hash(split) != split.content_hash:
        raise _StaleSplit("does not match its recorded hash (a file changed?)")
    if split.train_all is not None and not vouched and train_all_hash(split.train_all) != info.get("train_all_hash"):
        raise _StaleSplit(f"{TRAIN_ALL_FILE} does not match its recorded hash")
    return split


def _write(split: Split, folder: Path, dataset: Dataset, params: dict) -> None:
    """Write the split's files and split.json (each file's sha256, the content hash) into `folder`, after
    reading the files back and hashing what they hold (the one content hash of a prepared split: loads then
    check the files' sha256 only). Files that do not hash back are a bug, raised before anything is published."""
    for part in ("train", "valid", "test"):
        getattr(split, part).to_csv(folder / PART_FILES[part], sep="\t", index=False)
    split.user_segment.to_csv(folder / PART_FILES["user_segment"], sep="\t")
    split.item_segment.to_csv(folder / PART_FILES["item_segment"], sep="\t")
    files = list(PART_FILES.values())
    if len(split.context):
        split.context.to_csv(folder / CONTEXT_FILE, sep="\t", index=False)
        files.append(CONTEXT_FILE)
    extra: dict[str, Any] = {}
    if split.train_all is not None:
        split.train_all.to_csv(folder / TRAIN_ALL_FILE, sep="\t", index=False)
        files.append(TRAIN_ALL_FILE)
        extra = {"train_all_hash": train_all_hash(split.train_all)}
    frames, digests = _read_files(folder, files)
    back = _frames_hash(_hashed_frames(frames["train"], frames["valid"], frames["test"], frames["user_segment"],
                                       frames["item_segment"], frames.get("context", EMPTY_CONTEXT)))
    if back != split.content_hash or ("train_all" in frames
                                      and train_all_hash(frames["train_all"]) != extra["train_all_hash"]):
        raise RuntimeError(f"split {split.name!r} written to {folder} does not read back to its content hash")
    info = {"name": split.name, "params": params, "content_hash": split.content_hash,
            "dataset_hash": dataset.content_hash, "description": split.description,
            "counts": {p: int(len(getattr(split, p))) for p in ("train", "valid", "test")}
            | ({"train_all": int(len(split.train_all))} if split.train_all is not None else {}),
            "segments": {"users": split.user_segment.value_counts().to_dict(),
                         "items": split.item_segment.value_counts().to_dict()},
            "files": digests, "layout": LAYOUT, **extra}
    (folder / "split.json").write_text(json.dumps(info, indent=1, sort_keys=True))


def load_or_make_split(dataset: Dataset, name: str, params: dict, cache_dir: Path) -> Split:
    """The split from disk if saved there and verified (made from this dataset with these settings, files and
    content hash as recorded), else computed and saved (`bench.cache.cached_artifact`: locked, published
    atomically). A saved split that fails the check is reported in one stderr line, moved away and rebuilt."""
    from bench.cache import cached_artifact

    params = resolve_split_params(name, params)

    loaded: dict[Path, Split] = {}

    def problem(folder: Path) -> str | None:
        try:
            loaded[folder] = _load_saved(folder, dataset, name, params)
        except _StaleSplit as stale:
            return f"split {stale}"
        return None

    def build(tmp: Path) -> None:
        _write(make_split(dataset, name, params), tmp, dataset, params)

    folder, built = cached_artifact(split_dir(cache_dir, dataset, name, params), build, memo_dir=cache_dir,
                                    check=problem)
    if not built and folder in loaded:  # verified just now by the check: read once, not twice
        return loaded[folder]
    try:
        return _load_saved(folder, dataset, name, params)
    except _StaleSplit as stale:  # a bug, not bad input: the files just written do not read back
        raise RuntimeError(f"split {folder} written just now does not read back: {stale}") from None
