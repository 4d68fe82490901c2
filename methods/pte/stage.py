"""PtE (paper 004) Profile stage (Sec. 4.1, Eqs. 5-8) and reward selection (Sec. 4.2, Eqs. 9-11, 13).

Profile stage, greedy decoding (so "profiles stop changing" is measurable):
  U0  user profile from the user's training items and its overlap neighbours' items (Eqs. 5-6);
  I0  item profile from the profiles of (some of) its training users plus its metadata (Eq. 7);
  round r >= 1: U_r from the user's items and the I_{r-1} profiles of its items, then I_r from U_r (Eq. 8);
  stop when the mean 1 - cos of encoded profiles between rounds falls below a threshold, or at max_rounds.
Personalised embedding: K candidates per entity (candidate 0 = the profile-stage output, 1..K-1 sampled
from the same final prompt by temperature and per-profile seed); R = lc R_collab + ld R_dist; argmax kept.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bench.hashing import derive_seed
from methods.pte.generate import (
    GenerationStats,
    Generator,
    ProfileStore,
    PromptSet,
    Request,
    Sampling,
    run_requests,
)

if TYPE_CHECKING:
    from methods.pte.method import PtESettings

Encode = Callable[[list[str], str], np.ndarray]  # (texts, tag) -> unit-norm vectors [n, d]


def overlap_neighbours(groups: dict[str, set], k: int, queries: dict[str, set] | None = None) -> dict[str, list[str]]:
    """Top-k keys of `groups` by s(a, b) = |G_a & G_b| / |G_a| (Eq. 5) for every key a of `queries` (None: of
    `groups` itself, never a as its own neighbour); ties by id; only s > 0."""
    from scipy import sparse

    keys = sorted(groups)
    own = queries is None
    queries = groups if own else queries
    asked = sorted(queries)
    members = sorted({m for g in groups.values() for m in g})
    col = {m: j for j, m in enumerate(members)}

    def incidence(sets: dict[str, set], order: list[str]):
        rows = [i for i, key in enumerate(order) for m in sets[key] if m in col]
        cols = [col[m] for key in order for m in sets[key] if m in col]
        return sparse.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)),
                                 shape=(len(order), len(members)))

    matrix = incidence(groups, keys)
    query = matrix if own else incidence(queries, asked)
    sizes = np.maximum(np.array([len(queries[a]) for a in asked], dtype=np.float32), 1)
    out: dict[str, list[str]] = {}
    for start in range(0, len(asked), 1024):
        overlap = (query[start:start + 1024] @ matrix.T).toarray() / sizes[start:start + 1024, None]
        for row, score in enumerate(overlap):
            i = start + row
            if own:
                score[i] = -1.0
            order = np.lexsort((np.arange(len(keys)), -score))[:k]  # by score desc, then id order
            out[asked[i]] = [keys[j] for j in order if score[j] > 0]
    return out


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    return a @ b.T


def collab_reward(candidates: np.ndarray, history: np.ndarray) -> np.ndarray:
    """Eq. 10: R_collab(p) = mean_i cos(f(p), f(i)) over the entity's history encodings [n_hist, d]."""
    if len(history) == 0:
        return np.zeros(len(candidates))
    return cosine_matrix(candidates, history).mean(axis=1)


def dist_reward(candidates: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """Eq. 11: R_dist(p) = - mean_v cos(f(p), e_v) over the neighbours' current embeddings [n_nb, d]."""
    if len(neighbours) == 0:
        return np.zeros(len(candidates))
    return -cosine_matrix(candidates, neighbours).mean(axis=1)


def total_reward(r_collab: np.ndarray, r_dist: np.ndarray, lambda_collab: float, lambda_dist: float) -> np.ndarray:
    """Eq. 9."""
    return lambda_collab * r_collab + lambda_dist * r_dist


def select_best(rewards: np.ndarray) -> int:
    """Eq. 13's argmax (the first candidate among ties)."""
    return int(np.argmax(rewards))


@dataclass
class StageResult:
    user_text: dict[str, str] = field(default_factory=dict)  # selected profile per user (profile_users)
    item_text: dict[str, str] = field(default_factory=dict)  # selected profile per item (profile_items)
    info: dict[str, Any] = field(default_factory=dict)
    stats: GenerationStats = field(default_factory=GenerationStats)
    user_rewards: dict[str, list[float]] = field(default_factory=dict)
    item_rewards: dict[str, list[float]] = field(default_factory=dict)


class ProfileStage:
    """Runs the profile stage and the reward selection on one split's training interactions."""

    def __init__(self, train: pd.DataFrame, titles: pd.Series, item_text: pd.Series, generator: Generator,
                 prompts: PromptSet, store: ProfileStore, encode: Encode, settings: PtESettings,
                 progress: bool = True, grpo: Callable | None = None):
        self.s = settings
        self.generator, self.prompts, self.store, self.encode = generator, prompts, store, encode
        self.stage_generator = generator  # the profile-stage passes' generator (GRPO tunes the candidates' only)
        self.progress, self.grpo = progress, grpo
        ordered = train.sort_values(["user", "timestamp", "item"], kind="mergesort")
        self.user_items = {u: list(dict.fromkeys(g.astype(str))) for u, g in ordered.groupby("user")["item"]}
        by_item = ordered.sort_values(["item", "timestamp", "user"], kind="mergesort")
        self.item_users = {v: list(dict.fromkeys(g.astype(str))) for v, g in by_item.groupby("item")["user"]}
        self.titles = titles.astype(str)
        self.item_meta = item_text.astype(str)
        self.user_nb = overlap_neighbours({u: set(v) for u, v in self.user_items.items()}, settings.neighbours)
        self.item_nb = overlap_neighbours({v: set(u) for v, u in self.item_users.items()}, settings.neighbours)
        self.greedy = Sampling(settings.max_new_tokens, 0.0, 1.0, settings.repetition_penalty)
        self.sampled = Sampling(settings.max_new_tokens, settings.temperature, settings.top_p,
                                settings.repetition_penalty)
        self.stats = GenerationStats()
        self.passes: list[dict[str, Any]] = []
        self.rounds, self.item_rounds, self.user_profiles = 0, [], {}  # set by `run`
        self.user_current: dict[str, np.ndarray] | None = None  # training users' profile-stage encodings

    # ---- prompts -------------------------------------------------------------------------------------
    def _title_list(self, items: list[str]) -> str:
        return "; ".join(self.titles.get(i, i) for i in items)

    def user_init_prompt(self, user: str) -> str:
        return self._user_init_prompt(self.user_items[user], self.user_nb.get(user, []))

    def _user_init_prompt(self, own: list[str], neighbours: list[str]) -> str:
        counts = Counter(i for nb in neighbours for i in self.user_items[nb] if i not in set(own))
        extra = [i for i, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:self.s.neighbour_items]]
        return self.prompts.render("user_init", items=self._title_list(own[-self.s.user_items:]),
                                   neighbour_items=self._title_list(extra) or "(none)")

    def user_refine_prompt(self, user: str, item_profiles: dict[str, str]) -> str:
        return self._user_refine_prompt(self.user_items[user], item_profiles)

    def _user_refine_prompt(self, own: list[str], item_profiles: dict[str, str]) -> str:
        recent = [i for i in own if i in item_profiles][-self.s.refine_items:]
        lines = "\n".join(f"- {self.titles.get(i, i)}: {item_profiles[i]}" for i in recent) or "(none)"
        return self.prompts.render("user_refine", items=self._title_list(own[-self.s.user_items:]),
                                   item_profiles=lines)

    def item_prompt(self, item: str, user_profiles: dict[str, str]) -> str:
        users = [u for u in self.item_users[item] if u in user_profiles]
        if len(users) > self.s.item_users:
            rng = np.random.default_rng(derive_seed(self.s.profile_seed, "item-users", item))
            users = sorted(rng.choice(users, self.s.item_users, replace=False).tolist(), key=users.index)
        lines = "\n".join(f"- {user_profiles[u]}" for u in users) or "(none)"
        return self.prompts.render("item", item=self.item_meta.get(item, item), user_profiles=lines)

    def item_raw_prompt(self, item: str) -> str:
        counts = Counter(i for u in self.item_users[item] for i in self.user_items[u] if i != item)
        top = [i for i, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:self.s.neighbour_items]]
        return self.prompts.render("item_raw", item=self.item_meta.get(item, item),
                                   co_items=self._title_list(top) or "(none)")

    # ---- passes ----------------------------------------------------------------------------------------
    def _pass(self, name: str, kind: str, template: str, prompts: dict[str, str], candidate: int = 0,
              log: tuple[GenerationStats, list] | None = None) -> dict[str, str]:
        """One generation pass over `prompts` (entity -> prompt); its cost goes to `log` (stats, passes), by
        default the profile stage's. Candidate 0 (greedy) is a profile-stage pass, made by the stage's
        generator; sampled candidates by the current one (GRPO-tuned once `run` has tuned it)."""
        sampling = self.greedy if candidate == 0 else self.sampled
        requests = [Request(entity, template, prompt, derive_seed(self.s.profile_seed, kind, entity, candidate),
                            sampling) for entity, prompt in prompts.items()]
        generator = self.stage_generator if candidate == 0 else self.generator
        texts, stats = run_requests(requests, generator, self.prompts, self.store, self.s.batch_size,
                                    desc=f"PtE {name}", progress=self.progress)
        total, passes = log or (self.stats, self.passes)
        total.add(stats)
        passes.append({"pass": name, **stats.as_dict()})
        return dict(zip(prompts, texts))

    def _distance(self, new: dict[str, str], old: dict[str, str], tag: str) -> float:
        """Mean 1 - cos between the encodings of two rounds' profiles (the convergence measure)."""
        keys = sorted(new)
        a = self.encode([new[k] for k in keys], tag)
        b = self.encode([old[k] for k in keys], tag)
        return float(np.mean(1.0 - np.sum(a * b, axis=1)))

    def run(self, raw_item_vectors: dict[str, np.ndarray]) -> StageResult:
        s = self.s
        users, items = sorted(self.user_items), sorted(self.item_users)
        user_p: dict[str, str] = {}
        item_p: dict[str, str] = {}
        user_prompts: dict[str, str] = {}
        item_prompts: dict[str, str] = {}
        item_template = "item" if s.profile_users else "item_raw"
        if s.profile_users:
            user_prompts = {u: self.user_init_prompt(u) for u in users}
            user_p = self._pass("U0", "user", "user_init", user_prompts)
        if s.profile_items:
            item_prompts = {v: self.item_prompt(v, user_p) if s.profile_users else self.item_raw_prompt(v)
                            for v in items}
            item_p = self._pass("I0", "item", item_template, item_prompts)
        self.item_rounds = [item_p]  # I_r: what the user pass of round r + 1 reads
        distances, rounds, converged = [], 0, False
        if s.profile_users and s.profile_items:
            for r in range(1, s.max_rounds + 1):
                new_user_prompts = {u: self.user_refine_prompt(u, item_p) for u in users}
                new_user = self._pass(f"U{r}", "user", "user_refine", new_user_prompts)
                entry = {"round": r, "user": self._distance(new_user, user_p, "pte-user")}
                user_p, user_prompts = new_user, new_user_prompts
                if r < s.max_rounds or s.last_round_items:  # else the loop ends on the user pass
                    new_item_prompts = {v: self.item_prompt(v, new_user) for v in items}
                    new_item = self._pass(f"I{r}", "item", "item", new_item_prompts)
                    entry["item"] = self._distance(new_item, item_p, "pte-item")
                    item_p, item_prompts = new_item, new_item_prompts
                    self.item_rounds.append(item_p)
                distances.append(entry)
                rounds = r
                if max(v for k, v in entry.items() if k != "round") < s.convergence_threshold:
                    converged = True
                    break
        if self.grpo is not None:
            groups = self.grpo_groups(user_prompts, user_p, "user_refine" if rounds else "user_init", item_prompts,
                                      item_p, item_template, raw_item_vectors)
            if groups:
                self.generator = self.grpo(self, groups)
        self.rounds, self.user_profiles = rounds, dict(user_p)
        result = StageResult(user_text=dict(user_p), item_text=dict(item_p))
        selection_info: dict[str, Any] = {"selection": s.selection, "candidates": s.candidates,
                                          "item_candidates": s.item_candidates}
        if s.selection == "reward" and max(s.candidates, s.item_candidates) > 1:
            user_vec = {}
            if s.profile_users and s.candidates > 1:
                chosen, rewards, user_vec = self.select(
                    "user", user_prompts, user_p, "user_refine" if rounds else "user_init",
                    history={u: np.stack([raw_item_vectors[i] for i in self.user_items[u]]) for u in users},
                    neighbours=self.user_nb, n_candidates=s.candidates)
                result.user_text, result.user_rewards = chosen, rewards
                self.user_current = user_vec
                selection_info["user_changed"] = float(np.mean([chosen[u] != user_p[u] for u in users]))
            if s.profile_items and s.item_candidates > 1:
                if not user_vec:  # item-only: a user is the mean of its items' raw encodings
                    user_vec = {u: np.mean([raw_item_vectors[i] for i in self.user_items[u]], axis=0) for u in users}
                chosen, rewards, _ = self.select(
                    "item", item_prompts, item_p, item_template,
                    history={v: np.stack([user_vec[u] for u in self.item_users[v]]) for v in items},
                    neighbours=self.item_nb, n_candidates=s.item_candidates)
                result.item_text, result.item_rewards = chosen, rewards
                selection_info["item_changed"] = float(np.mean([chosen[v] != item_p[v] for v in items]))
        result.info = {"rounds": rounds, "converged": converged, "distances": distances,
                       "passes": self.passes, "selection": selection_info,
                       "n_users": len(users), "n_items": len(items)}
        result.stats = self.stats
        return result

    def _user_vectors(self, user_p: dict[str, str], raw_item_vectors) -> dict[str, np.ndarray]:
        """Encodings of the current user profiles, or (item-only) the mean raw encoding of a user's items."""
        users = sorted(self.user_items)
        if user_p:
            return dict(zip(users, self.encode([user_p[u] for u in users], "pte-user")))
        return {u: np.mean([raw_item_vectors[i] for i in self.user_items[u]], axis=0) for u in users}

    def grpo_groups(self, user_prompts, user_p, user_template, item_prompts, item_p, item_template, raw_item_vectors):
        """The sides GRPO tunes: users (their item history, user neighbours) and, with `grpo_items`, items
        (their users' encodings, item neighbours): the same rewards as the selection step (Eq. 9)."""
        from methods.pte.grpo import GRPOGroup

        s, groups = self.s, []
        if s.profile_users:
            users = sorted(user_prompts)
            current = self._user_vectors(user_p, raw_item_vectors)
            groups.append(GRPOGroup(
                "user", user_template, user_prompts, {u: np.stack([raw_item_vectors[i] for i in self.user_items[u]]) for u in users},
                {u: np.stack([current[n] for n in self.user_nb.get(u, [])]) if self.user_nb.get(u) else None
                 for u in users}))
        if s.grpo_items and s.profile_items:
            items = sorted(item_prompts)
            user_vec = self._user_vectors(user_p, raw_item_vectors)
            current = dict(zip(items, self.encode([item_p[v] for v in items], "pte-item")))
            groups.append(GRPOGroup(
                "item", item_template, item_prompts,
                {v: np.stack([user_vec[u] for u in self.item_users[v]]) for v in items},
                {v: np.stack([current[n] for n in self.item_nb.get(v, [])]) if self.item_nb.get(v) else None
                 for v in items}))
        return groups

    def select(self, kind: str, prompts: dict[str, str], current: dict[str, str], template: str,
               history: dict[str, np.ndarray], neighbours: dict[str, list[str]], n_candidates: int):
        """K candidates per entity, Eq. 9 rewards against the current (profile-stage) embeddings, argmax."""
        keys = sorted(prompts)
        candidates = [current] + [self._pass(f"{kind[0].upper()}-cand{k}", kind, template, prompts, candidate=k)
                                  for k in range(1, n_candidates)]
        current_vec = dict(zip(keys, self.encode([current[k] for k in keys], f"pte-{kind}")))
        cand_vec = [self.encode([c[k] for k in keys], f"pte-{kind}") for c in candidates]
        chosen, rewards = self._argmax(keys, candidates, cand_vec, history, neighbours, current_vec)
        return chosen, rewards, current_vec

    def _argmax(self, keys, candidates, cand_vec, history, neighbours, current_vec):
        """Eq. 9 per entity over its candidates (encodings `cand_vec[k][row]`), the neighbours' current
        encodings from `current_vec`; Eq. 13's argmax."""
        s = self.s
        chosen, rewards = {}, {}
        for row, key in enumerate(keys):
            vecs = np.stack([cv[row] for cv in cand_vec])
            nb = neighbours.get(key, [])
            nb_vec = np.stack([current_vec[n] for n in nb]) if nb else np.zeros((0, vecs.shape[1]))
            reward = total_reward(collab_reward(vecs, history[key]), dist_reward(vecs, nb_vec),
                                  s.lambda_collab, s.lambda_dist)
            chosen[key] = candidates[select_best(reward)][key]
            rewards[key] = [float(x) for x in reward]
        return chosen, rewards

    # ---- users absent from training (cold_users: their earlier sequence is given at inference) --------
    def profile_heldout(self, histories: dict[str, list[str]], raw_item_vectors: dict[str, np.ndarray]):
        """Profiles of users the stage did not train on, from `histories` (user -> item ids, oldest first):
        the training users' prompts, rounds, candidates and reward selection, against the finished stage
        (training users as neighbours, the item profiles of each round, the training users' profile-stage
        encodings for R_dist). Returns (user -> selected profile, stats, passes)."""
        s = self.s
        if not s.profile_users or not histories:
            return {}, GenerationStats(), []
        log = (GenerationStats(), [])
        users = sorted(histories)
        own = {u: list(dict.fromkeys(str(i) for i in histories[u])) for u in users}
        nb = overlap_neighbours({u: set(v) for u, v in self.user_items.items()}, s.neighbours,
                                queries={u: set(v) for u, v in own.items()})
        prompts = {u: self._user_init_prompt(own[u], nb[u]) for u in users}
        profiles = self._pass("held-out U0", "user", "user_init", prompts, log=log)
        for r in range(1, self.rounds + 1):
            prompts = {u: self._user_refine_prompt(own[u], self.item_rounds[r - 1]) for u in users}
            profiles = self._pass(f"held-out U{r}", "user", "user_refine", prompts, log=log)
        if s.selection == "reward" and s.candidates > 1:
            template = "user_refine" if self.rounds else "user_init"
            candidates = [profiles] + [self._pass(f"held-out U-cand{k}", "user", template, prompts, candidate=k,
                                                  log=log) for k in range(1, s.candidates)]
            cand_vec = [self.encode([c[u] for u in users], "pte-user") for c in candidates]
            if self.user_current is None:
                train = sorted(self.user_profiles)
                self.user_current = dict(zip(train, self.encode([self.user_profiles[u] for u in train],
                                                                 "pte-user")))
            dim = cand_vec[0].shape[1]
            history = {u: np.array([raw_item_vectors[i] for i in own[u] if i in raw_item_vectors]).reshape(-1, dim)
                       for u in users}
            profiles, _ = self._argmax(users, candidates, cand_vec, history, nb, self.user_current)
        return profiles, log[0], log[1]
