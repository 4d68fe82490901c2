"""The data side of the two-stage rerankers (methods/collm/rerank.py): the retrieval stage (the run's backbone,
trained exactly as the `random` method trains it, its scores cached), each user's top-N candidate file (cached,
hashed, copied into the run folder), and the pointwise Yes / No pairs the LLM stage learns from, built from a
`TrainView` only (train + valid + catalogue, never test).

Retrieval scores and candidates are cached under keys of what they depend on (catalogue and split hashes,
backbone name, settings and version, run seed; candidates also N), so every reranker of one split, backbone and
seed (TALLRec, CoLLM, ICL) reads the same candidate file.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import BenchError
from bench.eval.ranking import positions_by_user
from bench.hashing import json_hash, sha256_file
from bench.types import RunContext, ScoreQuery, TrainSplit, TrainView

RETRIEVAL_VERSION = 1  # what `retrieval_stage` computes (part of its cache key)
CANDIDATES_VERSION = 1  # what `candidate_file` computes
PAIRS_VERSION = 1  # what `pointwise_view` computes
CANDIDATE_FILE = "candidates.tsv.gz"
SCORE_BATCH = 256  # users per retrieval scoring call (as bench.eval.ranking.rank_users batches them)


# ------------------------------------------------------------------------------------------ sequences
def user_sequences(frames: list[pd.DataFrame]) -> dict[Any, list]:
    """Each user's items in time order (ties by item id) over the given interaction frames."""
    frames = [f for f in frames if len(f)]
    if not frames:
        return {}
    inter = pd.concat(frames).sort_values(["user", "timestamp", "item"], kind="mergesort")
    return {u: g.tolist() for u, g in inter.groupby("user")["item"]}


def seen_positions(data: TrainView) -> dict[Any, np.ndarray]:
    """Catalogue positions of each user's train + valid items (and a held-out valid user's context): what the
    engine masks, so never a candidate."""
    position = {item: k for k, item in enumerate(data.item_ids)}
    frames = [f[["user", "item"]] for f in (data.train, data.valid, data.split.valid_context) if len(f)]
    seen = pd.concat(frames)
    return {u: np.unique(p) for u, p in positions_by_user(seen, position, drop_unknown=True).items()}


def barred_positions(data: TrainView) -> np.ndarray:
    """Catalogue positions no user may be recommended under the split's `candidates` setting (cold_items:
    `cold` = only items without a training interaction are ranked, `warm` = only items with one; the engine
    masks the others), so that no candidate slot goes to an item the engine will mask."""
    candidates = str(data.split.params.get("candidates", "all"))
    warm = pd.Index(data.item_ids).isin(set(data.train["item"]))
    barred = {"all": np.zeros(len(warm), dtype=bool), "cold": warm, "warm": ~warm}.get(candidates)
    if barred is None:
        raise BenchError(f"split {data.split.name!r}: candidates {candidates!r}; valid: all, cold, warm")
    return np.flatnonzero(barred)


# ------------------------------------------------------------------------------------------ retrieval
@dataclass
class Retrieval:
    """The retrieval backbone's scores [users, catalogue] for every user with training data (cached), and the
    live backbone where the split has held-out users (scored from the history the query gives them)."""

    users: np.ndarray
    scores: np.ndarray  # float32, rows = users, columns = catalogue order
    info: dict[str, Any]
    model: Any = None  # methods.classic.RandomInit, when trained in this process and needed
    row: dict[Any, int] = field(default_factory=dict)

    def __post_init__(self):
        self.row = {u: k for k, u in enumerate(self.users)}

    def user_scores(self, user, history: tuple | None, item_ids: np.ndarray) -> np.ndarray:
        """The backbone's catalogue scores of `user`: the cached row, or (a held-out user) the live model's."""
        if history is not None:
            if self.model is None:
                raise BenchError(f"user {user!r} comes with a held-out history but no live retrieval model was kept")
            return self.model.score(ScoreQuery.of([user], item_ids, user_histories={user: tuple(history)}))[0]
        if user not in self.row:
            raise BenchError(f"user {user!r} has no training data and no held-out history: the retrieval backbone "
                             "cannot score it")
        return self.scores[self.row[user]]


def retrieval_key(data: TrainView, ctx: RunContext) -> str:
    from bench.backbones import BACKBONES
    from methods.classic import RandomInit

    return json_hash({"catalogue": data.catalogue.content_hash, "split": data.split.content_hash,
                      "backbone": ctx.backbone, "settings": ctx.backbone_settings.model_dump(mode="json"),
                      "backbone_version": BACKBONES[ctx.backbone].settings.version,
                      "method_version": RandomInit.version, "seed": ctx.seed, "version": RETRIEVAL_VERSION}, 16)


def _retrieval_problem(folder: Path) -> str | None:
    for name in ("scores.npy", "users.json", "info.json"):
        if not (folder / name).is_file():
            return f"{name} is missing"
    try:
        users = json.loads((folder / "users.json").read_text())
        shape = np.load(folder / "scores.npy", mmap_mode="r", allow_pickle=False).shape
    except (OSError, ValueError) as err:
        return f"does not load ({err})"
    return None if shape[0] == len(users) else f"scores.npy has {shape[0]} rows for {len(users)} users"


def retrieval_stage(data: TrainView, ctx: RunContext) -> Retrieval:
    """Train the run's backbone as the `random` method does (same class, data, settings, seed: the row to
    beat) and score every training user over the catalogue; cached. On a split with held-out users (cold_users)
    the backbone is trained even when cached, since those users are scored from histories given at inference."""
    from bench.cache import cached_artifact
    from methods.classic import RandomInit

    key = retrieval_key(data, ctx)
    folder = Path(ctx.cache_dir) / "rerank" / f"retrieval-{ctx.backbone}-{key}"
    held_out = len(data.split.valid_context) > 0
    trained: dict[str, Any] = {}

    def train() -> tuple[Any, np.ndarray, np.ndarray, dict]:
        model = RandomInit(name="random")
        start = time.perf_counter()
        report = model.fit(data, ctx)
        users = np.sort(data.train["user"].unique())
        scores = np.concatenate([np.asarray(model.score(ScoreQuery.of(users[b:b + SCORE_BATCH])), dtype=np.float32)
                                 for b in range(0, len(users), SCORE_BATCH)]) if len(users) else \
            np.zeros((0, len(data.item_ids)), dtype=np.float32)
        training = {k: v for k, v in report.facts.get("training", {}).items() if k != "curve"}
        info = {"backbone": ctx.backbone, "method": "random", "seed": ctx.seed, "key": key,
                "params": int(model.parameter_counts().trainable), "training": training,
                "converged": report.converged, "seconds": time.perf_counter() - start,
                "timings": dict(report.timings)}
        return model, users, scores, info

    def build(tmp: Path) -> None:
        trained["model"], users, scores, info = train()
        np.save(tmp / "scores.npy", scores)
        (tmp / "users.json").write_text(json.dumps([str(u) for u in users]))
        (tmp / "info.json").write_text(json.dumps(info, default=str))

    folder, built = cached_artifact(folder, build, memo_dir=ctx.cache_dir, check=_retrieval_problem)
    users = np.asarray(json.loads((folder / "users.json").read_text()), dtype=object)
    scores = np.load(folder / "scores.npy", allow_pickle=False)
    info = json.loads((folder / "info.json").read_text()) | {"cached": not built, "cache": str(folder)}
    model = trained.get("model")
    if model is None and held_out:
        model = train()[0]
    return Retrieval(users, scores, info, model)


# ------------------------------------------------------------------------------------------ candidates
def top_candidates(scores: np.ndarray, seen: np.ndarray | None, n: int) -> np.ndarray:
    """Catalogue positions of the `n` best-scored items the user has not seen (ties: catalogue order); items the
    backbone cannot score (-inf) are never candidates."""
    masked = np.asarray(scores, dtype=np.float64).copy()
    if seen is not None and len(seen):
        masked[seen] = -np.inf
    order = np.argsort(-masked, kind="stable")
    return order[np.isfinite(masked[order])][:n]


def retrieval_order(scores: np.ndarray) -> np.ndarray:
    """Catalogue positions by retrieval score, best first (ties: catalogue order)."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")


def _write_candidates(path: Path, candidates: dict[Any, np.ndarray], item_ids: np.ndarray) -> None:
    """One line per user: user, tab, the candidates' item ids (best retrieval score first); gzip without a
    timestamp, so equal candidates give an equal file (and sha256)."""
    text = io.StringIO()
    text.write("user\tcandidates\n")
    for user in sorted(candidates, key=str):
        text.write(f"{user}\t{' '.join(str(item_ids[k]) for k in candidates[user])}\n")
    with path.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as out:
        out.write(text.getvalue().encode())


def read_candidates(path: Path, item_ids: np.ndarray) -> dict[str, np.ndarray]:
    """user -> catalogue positions of its candidates, from a candidate file."""
    position = {str(item): k for k, item in enumerate(item_ids)}
    out = {}
    with gzip.open(path, "rt") as handle:
        next(handle)
        for line in handle:
            user, _, items = line.rstrip("\n").partition("\t")
            out[user] = np.array([position[i] for i in items.split()], dtype=np.int64)
    return out


def candidate_file(data: TrainView, ctx: RunContext, retrieval: Retrieval, n: int, seen: dict[Any, np.ndarray],
                   barred: np.ndarray | None = None) -> tuple[dict[Any, np.ndarray], dict[str, Any]]:
    """(user -> candidate positions, facts): every training user's top-`n` unseen items (none of `barred`) by the
    retrieval backbone, cached (key: the retrieval key + n) and copied into the run folder; the facts name its
    sha256."""
    from bench.cache import cached_artifact

    barred = np.zeros(0, dtype=np.int64) if barred is None else np.asarray(barred, dtype=np.int64)
    # `seen` and `barred` follow from the split, whose hash is in the retrieval key
    key = json_hash({"retrieval": retrieval.info["key"], "n": n, "version": CANDIDATES_VERSION}, 16)
    folder = Path(ctx.cache_dir) / "rerank" / f"candidates-{ctx.backbone}-{key}"

    def build(tmp: Path) -> None:
        chosen = {u: top_candidates(retrieval.scores[k], np.union1d(seen.get(u, np.zeros(0, np.int64)), barred), n)
                  for k, u in enumerate(retrieval.users)}
        _write_candidates(tmp / CANDIDATE_FILE, chosen, data.item_ids)
        (tmp / "info.json").write_text(json.dumps({"sha256": sha256_file(tmp / CANDIDATE_FILE), "n": n,
                                                   "retrieval_key": retrieval.info["key"], "users": len(chosen)}))

    def problem(folder: Path) -> str | None:
        try:
            info = json.loads((folder / "info.json").read_text())
        except (OSError, ValueError) as err:
            return f"info.json does not load ({err})"
        if not (folder / CANDIDATE_FILE).is_file():
            return f"{CANDIDATE_FILE} is missing"
        return None if sha256_file(folder / CANDIDATE_FILE) == info["sha256"] else f"{CANDIDATE_FILE} sha256 differs"

    folder, built = cached_artifact(folder, build, memo_dir=ctx.cache_dir, check=problem)
    info = json.loads((folder / "info.json").read_text())
    Path(ctx.run_dir).mkdir(parents=True, exist_ok=True)
    copy = Path(ctx.run_dir) / CANDIDATE_FILE
    shutil.copyfile(folder / CANDIDATE_FILE, copy)
    digest = sha256_file(copy)
    if digest != info["sha256"]:
        raise BenchError(f"candidate file {copy}: sha256 {digest} differs from the cached {info['sha256']}")
    facts = {"file": CANDIDATE_FILE, "sha256": digest, "n": n, "users": int(info["users"]), "cached": not built,
             "cache": str(folder), "key": key}
    return read_candidates(copy, data.item_ids), facts


# ------------------------------------------------------------------------------------------ Yes/No pairs
@dataclass
class PairSpec:
    """How the pointwise pairs are built (the reranker's settings)."""

    history_length: int
    negatives_per_positive: int
    max_train_pairs: int  # 0 = every training positive, else positives sampled so that pairs <= this
    max_valid_pairs: int
    seed: int
    # also build every training positive's pairs (the view's `train_all`) when the cap samples them: a CF model
    # (CoLLM's encoder) pre-trains on all of them, the cap limits the LLM's pairs only
    all_train_pairs: bool = False


def _sample_negatives(rng: np.random.Generator, n_items: int, seen: set, k: int) -> list[int]:
    """`k` distinct catalogue positions outside `seen` (fewer when fewer exist), by rejection."""
    free = n_items - len(seen)
    if free <= k:
        return [j for j in range(n_items) if j not in seen]
    picked: list[int] = []
    while len(picked) < k:
        j = int(rng.integers(n_items))
        if j not in seen and j not in picked:
            picked.append(j)
    return picked


def _pairs(rows: list[tuple], item_ids: np.ndarray, seen: dict, spec: PairSpec, cap: int,
           rng: np.random.Generator) -> tuple[pd.DataFrame, dict[str, int]]:
    """Labelled pairs from (user, item, timestamp, history) positives: a seeded subset of positives (`cap`),
    each followed by its sampled negatives (same user, history and timestamp, label 0)."""
    k = spec.negatives_per_positive
    available = len(rows)
    keep = available if cap == 0 else max(1, min(available, cap // (1 + k)))
    chosen = np.sort(rng.choice(available, size=keep, replace=False)) if keep < available else np.arange(available)
    out = []
    for r in chosen:
        user, item, ts, history = rows[r]
        hist = json.dumps(list(history))
        out.append((user, item, ts, 1, hist))
        for j in _sample_negatives(rng, len(item_ids), seen.get(user, set()), k):
            out.append((user, item_ids[j], ts, 0, hist))
    frame = pd.DataFrame(out, columns=["user", "item", "timestamp", "label", "history"])
    return frame, {"available_positives": int(available), "positives": int(keep),
                   "negatives": int(len(frame) - keep), "pairs": int(len(frame))}


def pointwise_view(data: TrainView, spec: PairSpec) -> tuple[TrainView, dict[str, Any]]:
    """The Yes / No view the LLM stage trains on (a TrainView over the same catalogue, labelled pairs as its
    train and valid parts, each with its `history` column), built from `data` alone.

    Train: every observed training (user, item) is a positive whose history is the user's earlier training
    items (time order, last `history_length`, as the ctr protocol's); valid: each valid interaction is a positive
    with the user's training sequence as history (a held-out user's: its given context). Each positive brings
    `negatives_per_positive` items the user has neither in train nor in valid, drawn with the run seed.
    With `all_train_pairs` and a cap that samples the training positives, `train_all` holds every training
    positive with its own negatives (a separate stream of the run seed: `train` is as without it)."""
    L = spec.history_length
    position = {item: k for k, item in enumerate(data.item_ids)}
    seen = {u: set(v.tolist()) for u, v in seen_positions(data).items()}
    train = data.train.sort_values(["user", "timestamp", "item"], kind="mergesort")
    train_rows = []
    for user, group in train.groupby("user", sort=True):
        items, times = group["item"].tolist(), group["timestamp"].tolist()
        for t, (item, ts) in enumerate(zip(items, times)):
            if item in position:
                train_rows.append((user, item, ts, items[max(0, t - L):t]))
    sequences = {**user_sequences([data.split.valid_context]), **user_sequences([data.train])}
    valid = data.valid.sort_values(["user", "timestamp", "item"], kind="mergesort")
    valid_rows = [(u, i, ts, sequences.get(u, [])[-L:]) for u, i, ts in
                  zip(valid["user"], valid["item"], valid["timestamp"]) if i in position]
    # separate streams: the valid pairs do not depend on the training cap
    train_frame, train_info = _pairs(train_rows, data.item_ids, seen, spec, spec.max_train_pairs,
                                     np.random.default_rng([spec.seed, 1]))
    valid_frame, valid_info = _pairs(valid_rows, data.item_ids, seen, spec, spec.max_valid_pairs,
                                     np.random.default_rng([spec.seed, 2]))
    if not len(train_frame) or not len(valid_frame):
        raise BenchError(f"split {data.split.name!r} gives no {'training' if not len(train_frame) else 'validation'} "
                         "pairs for the reranker's LLM stage")
    train_all, all_info = None, None
    if spec.all_train_pairs and train_info["positives"] < train_info["available_positives"]:
        train_all, all_info = _pairs(train_rows, data.item_ids, seen, spec, 0, np.random.default_rng([spec.seed, 3]))
    digest = hashlib.sha256()
    for frame in (train_frame, valid_frame):
        digest.update(frame.to_csv(index=False).encode())
    content = json_hash({"frames": digest.hexdigest(), "source": data.split.content_hash, "version": PAIRS_VERSION})
    params = {"history_length": L, "history": "pair", "source_split": data.split.name,
              "negatives_per_positive": spec.negatives_per_positive}
    # `train_all` is not in the hash (as a split's): the CF model's cache key hashes the pairs it learns from
    part = TrainSplit(name=f"{data.split.name}+yesno", params=params, train=train_frame, valid=valid_frame,
                      item_segment=data.split.item_segment, content_hash=content,
                      description=f"Yes/No pairs from {data.split.name}'s train / valid parts (reranker LLM stage)",
                      train_all=train_all)
    info = {"train": train_info, "valid": valid_info, "negatives_per_positive": spec.negatives_per_positive,
            "history_length": L, "max_train_pairs": spec.max_train_pairs, "max_valid_pairs": spec.max_valid_pairs,
            "hash": content}
    if spec.all_train_pairs:  # every training positive's pairs (the CF model's), or `train` when uncapped
        info["train_all"] = all_info or dict(train_info)
    return TrainView(data.catalogue, part), info
