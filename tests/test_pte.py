"""PtE (paper 004): neighbours (Eq. 5), rewards (Eqs. 9-11), argmax (Eq. 13), resumable profile store,
convergence stop, ablation settings, GRPO (Eq. 12) and a tiny end-to-end run with a fake generator."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from bench.backbones import backbone_settings
from bench.catalog import METHODS, method_families
from bench.data.splits import make_split, resolve_split_params
from bench.errors import BenchError
from methods.pte.generate import ProfileStore, PromptSet, Sampling
from methods.pte.method import PtESettings
from methods.pte.stage import (
    ProfileStage,
    collab_reward,
    dist_reward,
    overlap_neighbours,
    select_best,
    total_reward,
)
from tests.conftest import FitCall, score_test_users


class FakeGenerator:
    """Deterministic 'LLM': the profile is built from the prompt's words (and the seed when sampling)."""

    def __init__(self, constant: str | None = None):
        self.calls, self.rows, self.constant = 0, 0, constant

    def fingerprint(self) -> str:
        return "fake-generator" + (self.constant or "")

    def generate(self, system, prompts, seeds, sampling: Sampling):
        self.calls += 1
        self.rows += len(prompts)
        out = []
        for prompt, seed in zip(prompts, seeds):
            if self.constant is not None:
                out.append((self.constant, 3))
                continue
            words = [w for w in prompt.replace(";", " ").split() if w.isdigit()][:6]
            tag = f" variant{seed % 5}" if sampling.temperature > 0 else ""
            out.append(("likes movie " + " movie ".join(words) + tag, 8))
        return out


def hash_encode(texts: list[str], tag: str = "") -> np.ndarray:
    """Bag of hashed words -> 32-d unit vectors (a stand-in for f_enc)."""
    out = np.zeros((len(texts), 32), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in text.lower().replace(".", " ").replace("(", " ").replace(")", " ").split():
            out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % 32] += 1.0
    out += 1e-3
    return out / np.linalg.norm(out, axis=1, keepdims=True)


class HashEncoder:
    name, dim = "hash", 32

    def fingerprint(self) -> str:
        return "hash-encoder"

    def parameter_count(self) -> int:
        return 99

    def encode(self, texts, batch_size=None, progress=False):
        return hash_encode(list(texts))


def _stage(dataset, store_dir, generator, **settings):
    defaults = {"batch_size": 8, "max_rounds": 1, "item_candidates": 2, "last_round_items": True}  # paper-like
    return ProfileStage(dataset.interactions, dataset.items["title"], dataset.item_text, generator, PromptSet(),
                        ProfileStore(store_dir), hash_encode, PtESettings(**{**defaults, **settings}),
                        progress=False)


def _raw(dataset):
    return dict(zip(dataset.item_ids, hash_encode(dataset.item_text.tolist())))


def test_overlap_ratio_neighbours():
    groups = {"a": {1, 2, 3, 4}, "b": {1, 2}, "c": {3}, "d": {9}}
    # s(a,b) = 2/4, s(a,c) = 1/4, s(a,d) = 0; s(b,a) = 2/2; s(c,a) = 1/1; d has no overlap
    assert overlap_neighbours(groups, 2) == {"a": ["b", "c"], "b": ["a"], "c": ["a"], "d": []}
    assert overlap_neighbours(groups, 1)["a"] == ["b"]


def test_rewards_on_toy_vectors():
    cand = np.array([[1.0, 0.0], [0.0, 2.0]])
    history = np.array([[1.0, 0.0], [1.0, 1.0]])  # cosines: cand0 -> 1, 1/sqrt2; cand1 -> 0, 1/sqrt2
    np.testing.assert_allclose(collab_reward(cand, history), [(1 + 2 ** -0.5) / 2, (2 ** -0.5) / 2])
    neighbours = np.array([[0.0, 3.0]])
    np.testing.assert_allclose(dist_reward(cand, neighbours), [0.0, -1.0])
    total = total_reward(collab_reward(cand, history), dist_reward(cand, neighbours), 1.0, 1.0)
    np.testing.assert_allclose(total, [(1 + 2 ** -0.5) / 2, (2 ** -0.5) / 2 - 1.0])
    assert select_best(total) == 0
    assert select_best(total_reward(collab_reward(cand, history), dist_reward(cand, neighbours), 0.0, 1.0)) == 0
    assert select_best(np.array([0.1, 0.5, 0.5])) == 1  # first among ties
    assert collab_reward(cand, np.zeros((0, 2))).tolist() == [0.0, 0.0]


def test_resume_generates_nothing_the_second_time(tiny_dataset, tmp_path):
    first = FakeGenerator()
    result = _stage(tiny_dataset, tmp_path / "store", first).run(_raw(tiny_dataset))
    assert first.calls > 0 and result.stats.generated == first.rows
    again = FakeGenerator()
    repeat = _stage(tiny_dataset, tmp_path / "store", again).run(_raw(tiny_dataset))
    assert again.calls == 0 and repeat.stats.generated == 0
    assert repeat.user_text == result.user_text and repeat.item_text == result.item_text
    records = list(ProfileStore(tmp_path / "store"))
    assert len(records) == first.rows
    record = records[0]
    assert {"model_hash", "template_hash", "sampling", "seed", "prompt", "text"} <= set(record)


def test_convergence_stops_when_profiles_do_not_change(tiny_dataset, tmp_path):
    result = _stage(tiny_dataset, tmp_path / "s", FakeGenerator(constant="the same profile"),
                    max_rounds=4, candidates=1, item_candidates=1).run(_raw(tiny_dataset))
    assert result.info["rounds"] == 1 and result.info["converged"]
    assert result.info["distances"][0]["user"] == pytest.approx(0.0, abs=1e-6)
    varying = _stage(tiny_dataset, tmp_path / "v", FakeGenerator(), max_rounds=2, candidates=1, item_candidates=1,
                     convergence_threshold=0.0).run(_raw(tiny_dataset))
    assert varying.info["rounds"] == 2 and not varying.info["converged"]
    assert [p["pass"] for p in varying.info["passes"]] == ["U0", "I0", "U1", "I1", "U2", "I2"]


def test_cpu_defaults_end_on_the_user_pass_and_select_users_only(tiny_dataset, tmp_path):
    defaults = PtESettings()
    assert defaults.item_candidates == 1 and not defaults.last_round_items
    gen = FakeGenerator()
    result = ProfileStage(tiny_dataset.interactions, tiny_dataset.items["title"], tiny_dataset.item_text, gen,
                          PromptSet(), ProfileStore(tmp_path / "s"), hash_encode,
                          PtESettings(batch_size=8, convergence_threshold=0.0), progress=False).run(_raw(tiny_dataset))
    assert [p["pass"] for p in result.info["passes"]] == ["U0", "I0", "U1", "U-cand1"]
    assert set(result.info["distances"][0]) == {"round", "user"}  # no item pass in the last round
    assert result.user_rewards and not result.item_rewards
    assert result.info["selection"]["item_candidates"] == 1
    # items keep the I0 output, built from the U0 profiles
    assert set(result.item_text) == set(tiny_dataset.interactions["item"].astype(str))


def test_ablation_settings_change_behaviour(tiny_dataset, tmp_path):
    def passes(**settings):
        gen = FakeGenerator()
        result = _stage(tiny_dataset, tmp_path / str(sorted(settings.items())), gen, **settings).run(_raw(tiny_dataset))
        return [p["pass"] for p in result.info["passes"]], result

    full, full_result = passes()
    assert full == ["U0", "I0", "U1", "I1", "U-cand1", "I-cand1"]
    assert passes(max_rounds=0)[0] == ["U0", "I0", "U-cand1", "I-cand1"]
    assert passes(profile_items=False)[0] == ["U0", "U-cand1"]
    item_only, item_result = passes(profile_users=False)
    assert item_only == ["I0", "I-cand1"] and not item_result.user_text
    assert passes(selection="none")[0] == ["U0", "I0", "U1", "I1"]
    # the reward weights change which candidate is kept for some users
    _, no_dist = passes(lambda_dist=0.0)
    _, no_collab = passes(lambda_collab=0.0)
    assert no_dist.user_text != no_collab.user_text or no_dist.item_text != no_collab.item_text
    assert all(len(r) == 2 for r in full_result.user_rewards.values())  # K = 2 candidates scored
    names = {n for n in METHODS.names() if n.startswith("pte")}
    assert names == {"pte", "pte-noprofile", "pte-useronly", "pte-itemonly", "pte-singlepass", "pte-noreward",
                     "pte-nogrpo", "pte-grpo", "pte-grpo-items",
                     "pte-nodist", "pte-nocollab", "pte-init"}
    assert METHODS.settings("pte-grpo").grpo_steps > 0 and not METHODS.settings("pte-grpo").grpo_items
    assert METHODS.settings("pte-grpo-items").grpo_items and METHODS.settings("pte-grpo-items").item_candidates == 2
    assert set(method_families()["pte"]) == names
    assert METHODS.settings("pte-nodist").lambda_dist == 0.0  # the preset, recorded in method_settings
    assert METHODS.defaults("pte-noprofile")["profile_items"] is False


def test_longtail_split_segments_and_no_leakage(tiny_dataset):
    # every tiny user has 12 interactions: threshold 12 leaves no tail user, an error unless allowed
    with pytest.raises(BenchError, match="no tail user is evaluated"):
        make_split(tiny_dataset, "longtail", resolve_split_params("longtail", {"tail_user_threshold": 12,
                                                                               "tail_item_threshold": 10}))
    params = resolve_split_params("longtail", {"tail_user_threshold": 12, "tail_item_threshold": 10,
                                               "empty_segments": "allow"})
    split = make_split(tiny_dataset, "longtail", params)
    train_pairs = set(zip(split.train["user"], split.train["item"]))
    assert not train_pairs & set(zip(split.test["user"], split.test["item"]))
    assert not train_pairs & set(zip(split.valid["user"], split.valid["item"]))
    assert split.test.groupby("user").size().max() == 1  # leave-one-out
    counts = tiny_dataset.interactions.groupby("item").size()
    for item, label in split.item_segment.items():
        assert label == ("tail" if counts[item] < 10 else "head")
    assert set(split.user_segment) <= {"warm", "cold"}
    assert (split.user_segment == "warm").all()  # every tiny user has 12 interactions, not < 12
    low = make_split(tiny_dataset, "longtail", resolve_split_params("longtail", {"tail_user_threshold": 13}))
    assert (low.user_segment == "cold").all()


def test_grpo_step_changes_lora_and_uses_group_relative_loss():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from methods.llm.lora import add_lora, lora_config
    from methods.llm.train import train_loop
    from methods.pte.grpo import completion_logprobs, group_loss, group_relative_advantages, grpo_loss

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2))

    class Tok:
        pad_token_id, eos_token_id = 0, 1

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [2 + (ord(c) % 60) for c in text]}

    model = add_lora(model, lora_config(r=4, alpha=8, dropout=0.0, target_modules=("q_proj", "k_proj", "v_proj",
                                                                                    "o_proj"), task_type="CAUSAL_LM"))
    for name, p in model.named_parameters():  # peft zero-initialises B: perturb so A also gets gradients
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    prompts = [["ab", "ab"], ["cd", "cd"]]
    completions = [["xy", "zz"], ["q", "rst"]]
    rewards = np.array([[1.0, 0.0], [0.2, 0.6]])
    with torch.no_grad():
        logp = completion_logprobs(model, Tok(), [p for g in prompts for p in g],
                                   [c for g in completions for c in g]).view(2, 2)
    f = np.log(1 / (1 + np.exp(-(rewards - rewards.mean(1, keepdims=True)))))
    advantage = f - f.mean(1, keepdims=True)
    np.testing.assert_allclose(group_relative_advantages(rewards).numpy(), advantage, rtol=1e-5)
    expected = -(advantage * logp.numpy()).mean()
    assert float(grpo_loss(logp, rewards)) == pytest.approx(expected, rel=1e-4)
    params = [p for p in model.parameters() if p.requires_grad]
    result = train_loop(params, lambda ps: torch.optim.SGD(ps, lr=0.5), iter([(prompts, completions, rewards)]),
                        lambda batch: group_loss(model, Tok(), *batch), model=model)
    assert result.steps == 1 and result.losses[0] == pytest.approx(expected, rel=1e-4)
    assert not model.training  # back in eval mode for generation
    changed = [n for n, p in model.named_parameters() if "lora_" in n and not torch.equal(p, before[n])]
    assert changed and all("lora_" in n for n in changed)
    frozen = [p for n, p in model.named_parameters() if "lora_" not in n]
    assert not any(p.requires_grad for p in frozen)


@pytest.mark.parametrize("method_name,backbone", [("pte", "sasrec"), ("pte-noprofile", "lightgcn")])
def test_end_to_end_with_fake_generator(tiny_dataset, tmp_path, monkeypatch, method_name, backbone):
    from methods.pte.method import PtE

    generator = FakeGenerator()
    monkeypatch.setattr(PtE, "_generator", lambda self, ctx: generator)
    name = "cold_users" if backbone == "sasrec" else "new_users_fewshot"  # an ID table needs the users trained
    split = make_split(tiny_dataset, name, resolve_split_params(name, {"valid_fraction": 0.2, "test_fraction": 0.2}))
    config = backbone_settings(backbone, {"epochs": 2, "embedding_size": 16, "train_batch_size": 64,
                                                "stopping_step": 1})
    method = METHODS.create(method_name, {"batch_size": 16})
    encoder = HashEncoder()
    ctx = FitCall(dataset=tiny_dataset, split=split, seed=0, device="cpu", run_dir=tmp_path / "run",
                     cache_dir=tmp_path, backbone=backbone, backbone_settings=config, encoder=encoder,
                     embed_items=lambda: hash_encode(tiny_dataset.item_text.tolist()))
    generator.load = lambda: (type("M", (), {"parameters": lambda self: iter(())})(), None)
    generator.model_dir = "fake"
    ctx.run(method)
    users = np.sort(split.test["user"].unique())
    scores = score_test_users(method, split, users)
    assert scores.shape == (len(users), len(tiny_dataset.item_ids)) and np.isfinite(scores).any(axis=1).all()
    if method_name == "pte":
        assert generator.calls > 0
        cost = ctx.extra["pte"]["offline_cost"]
        held = ctx.extra["pte"]["heldout"]
        assert cost["tokens"] > 0 and cost["rounds"] == 1
        assert cost["generated"] + sum(p["generated"] for p in held["passes"]) == generator.rows
        # every user it scores is profiled: training users, held-out valid users (at fit), test users (at score)
        n_valid, n_test = split.valid["user"].nunique(), split.test["user"].nunique()
        assert held["users"] == n_valid + n_test and held["tokens"] > 0
        assert ctx.extra["pte"]["n_users"] == split.train["user"].nunique() + n_valid + n_test
        assert [p["pass"] for p in held["passes"]] == ["held-out U0", "held-out U1", "held-out U-cand1"] * 2
        assert "profile_stage" in ctx.timings
        assert ctx.extra["pte_downstream"]["user_embedding"] == "add"
        table = method.cf.model.user_term.frozen
        assert float(table[0].abs().sum()) == 0.0 and float(table[1:].abs().sum()) > 0
        # the user term reaches the training loss (its adapter got gradients) ...
        assert method.cf.model.user_term.adapter.weight.grad is not None
        # ... and the scores: changing one user's profile embedding changes that user's scores only
        import torch

        row = int(method.cf.token_index("user_id", users[:1])[0])
        with torch.no_grad():
            table[row] += 1.0
        changed = score_test_users(method, split, users)
        moved = ~np.isclose(changed, scores, equal_nan=True).all(axis=1)
        assert moved.tolist() == [True] + [False] * (len(users) - 1)
    else:
        assert generator.calls == 0 and ctx.extra["pte_downstream"]["projection"] == "pca"


def test_sampled_negatives_option_keeps_positives_and_n_unseen(tiny_dataset):
    from bench.data.splits import sampled_negative_exclusion

    split = make_split(tiny_dataset, "longtail", resolve_split_params("longtail", {"eval_negatives": 5,
                                                                                   "tail_user_threshold": 13}))
    item_ids = tiny_dataset.item_ids
    position = {item: i for i, item in enumerate(item_ids)}
    positives = {u: np.sort(g.map(position).to_numpy()) for u, g in split.test.groupby("user")["item"]}
    seen = pd.concat([split.train, split.valid])
    exclude = {u: g.map(position).to_numpy() for u, g in seen.groupby("user")["item"]}
    masked = sampled_negative_exclusion(split, item_ids, positives, exclude, 5)
    for user, rows in masked.items():
        kept = np.setdiff1d(np.arange(len(item_ids)), rows)
        assert set(positives[user]) <= set(kept) and len(kept) == len(positives[user]) + 5
        assert not set(kept) & set(exclude[user])  # negatives are never items the user interacted with
    assert sampled_negative_exclusion(split, item_ids, positives, exclude, 5).keys() == masked.keys()


@pytest.mark.slow
def test_real_generator_seeds_are_per_profile(tmp_path):
    """SmolLM2: a sampled profile depends on its own seed only, not on what else is in the batch."""
    import os
    from pathlib import Path

    import torch

    from bench.data import assets
    from bench.errors import BenchError
    from methods.llm.generate import ChatGenerator

    torch.set_num_threads(1)
    try:
        folder = assets.smollm2_dir(Path(os.environ.get("BENCH_CACHE", "datasets/cache")))
    except BenchError:
        pytest.skip("SmolLM2 asset not installed")
    gen = ChatGenerator(folder, "cpu", tmp_path)
    sampling = Sampling(max_new_tokens=8, temperature=0.9, top_p=0.95, repetition_penalty=1.2)
    system, prompt = "You describe movie tastes.", "A user liked Toy Story; Babe. Describe their taste."
    alone = gen.generate(system, [prompt], [11], sampling)[0]
    batched = gen.generate(system, [prompt, "A user liked Heat; Fargo; Seven. Describe their taste.", prompt],
                           [11, 12, 13], sampling)
    assert batched[0][0] == alone[0] and 0 < alone[1] <= 8
    greedy = Sampling(max_new_tokens=8)
    assert gen.generate(system, [prompt], [1], greedy)[0] == gen.generate(system, [prompt], [2], greedy)[0]


def test_pte_init_puts_pca_of_profiles_in_the_trainable_item_table(tiny_dataset, tmp_path, monkeypatch):
    """pte-init (seq_items 'init'): the profile embeddings, PCA-projected to embedding_size, initialise SASRec's own
    (trainable) item table instead of sitting frozen behind an adapter; a too-wide table is a clear error."""
    from bench.catalog import METHODS
    from methods.backbones.sequential import RecBoleSeq
    from methods.pte.method import PtE

    generator = FakeGenerator()
    monkeypatch.setattr(PtE, "_generator", lambda self, ctx: generator)
    generator.load = lambda: (type("M", (), {"parameters": lambda self: iter(())})(), None)
    generator.model_dir = "fake"
    seen = {}
    original = RecBoleSeq.replace_item_embeddings

    def spy(self, item_ids, matrix, mode):
        seen.update(mode=mode, matrix=matrix.copy())
        return original(self, item_ids, matrix, mode)

    monkeypatch.setattr(RecBoleSeq, "replace_item_embeddings", spy)
    split = make_split(tiny_dataset, "cold_users", resolve_split_params("cold_users", {"valid_fraction": 0.2,
                                                                                       "test_fraction": 0.2}))

    def fit(size):
        config = backbone_settings("sasrec", {"epochs": 1, "embedding_size": size, "train_batch_size": 64,
                                                    "stopping_step": 1})
        method = METHODS.create("pte-init", {"batch_size": 16})
        ctx = FitCall(dataset=tiny_dataset, split=split, seed=0, device="cpu", run_dir=tmp_path / f"r{size}",
                         cache_dir=tmp_path, backbone="sasrec", backbone_settings=config, encoder=HashEncoder(),
                         embed_items=lambda: hash_encode(tiny_dataset.item_text.tolist()))
        ctx.run(method)
        return method, ctx

    method, ctx = fit(16)
    assert seen["mode"] == "init" and seen["matrix"].shape == (len(tiny_dataset.item_ids), 16)
    assert ctx.extra["pte_downstream"]["mode"] == "init"
    import torch

    table = method.cf.model.item_embedding
    assert type(table) is torch.nn.Embedding and table.weight.requires_grad  # not a frozen table + adapter
    assert np.isfinite(score_test_users(method, split)).any(axis=1).all()
    with pytest.raises(BenchError, match="seq_items 'init' needs embedding_size"):
        fit(HashEncoder.dim + 2)  # wider than the 32-d profile embeddings


def test_grpo_groups_cover_items_only_with_grpo_items(tiny_dataset, tmp_path):
    """GRPO's item side (the paper's 'analogous formulation'): item groups carry the item's users as the
    collaborative history and its overlap neighbours' current encodings, as the item selection does."""
    seen = []

    def record(stage, groups):
        seen.append(groups)
        return stage.generator

    def groups_of(**settings):
        seen.clear()
        stage = _stage(tiny_dataset, tmp_path / str(sorted(settings.items())), FakeGenerator(), **settings)
        stage.grpo = record
        stage.run(_raw(tiny_dataset))
        return stage, seen[0]

    _, user_only = groups_of()
    assert [g.kind for g in user_only] == ["user"] and user_only[0].template == "user_refine"
    stage, both = groups_of(grpo_items=True)
    assert [g.kind for g in both] == ["user", "item"]
    items = both[1]
    assert items.template == "item" and set(items.prompts) == set(stage.item_users)
    for item, users in stage.item_users.items():
        assert items.history[item].shape == (len(users), 32)  # one row per user of the item
        nb = stage.item_nb.get(item, [])
        assert (items.neighbours[item] is None) == (not nb)
        if nb:
            assert items.neighbours[item].shape == (len(nb), 32)
    _, item_only = groups_of(grpo_items=True, profile_users=False)
    assert [g.kind for g in item_only] == ["item"] and item_only[0].template == "item_raw"


def test_grpo_tunes_one_lora_on_user_and_item_groups(tiny_dataset, tmp_path):
    from methods.llm.generate import ChatGenerator
    from methods.pte.grpo import GRPOFineTune
    from tests.contract import make_tiny_lm

    lm = make_tiny_lm(tmp_path / "lm")
    base = ChatGenerator(lm, "cpu", tmp_path / "cache")
    stage = ProfileStage(tiny_dataset.interactions, tiny_dataset.items["title"], tiny_dataset.item_text, base,
                         PromptSet(), ProfileStore(tmp_path / "store"), hash_encode,
                         PtESettings(batch_size=8, max_new_tokens=4, grpo_items=True), progress=False)
    grpo = GRPOFineTune(steps=2, users_per_step=2, group_size=2, learning_rate=1e-2, lora_r=2, lora_alpha=4, seed=0)
    stage.grpo = grpo
    result = stage.run(_raw(tiny_dataset))
    assert grpo.info["kinds"] == ["user", "item"] and len(grpo.info["losses"]) == 2
    assert {k: len(v) for k, v in grpo.info["mean_reward_per_step"].items()} == {"user": 2, "item": 2}
    assert stage.generator is not base and stage.generator.fingerprint() != base.fingerprint()
    assert result.user_text and result.item_text


def test_overlap_neighbours_of_users_outside_the_groups():
    groups = {"a": {1, 2, 3, 4}, "b": {1, 2}, "c": {3}}
    # a held-out user with items {2, 3, 9}: s(x, a) = 2/3, s(x, b) = 1/3, s(x, c) = 1/3 (ties by id)
    assert overlap_neighbours(groups, 2, queries={"x": {2, 3, 9}, "y": {7}}) == {"x": ["a", "b"], "y": []}
    assert overlap_neighbours(groups, 3, queries={"x": {2, 3, 9}})["x"] == ["a", "b", "c"]
    # the queries' own overlap matches the groups' when a query equals a group (never itself among groups)
    assert overlap_neighbours(groups, 2)["b"] == overlap_neighbours({k: v for k, v in groups.items() if k != "b"},
                                                                    2, queries={"b": {1, 2}})["b"]


@pytest.mark.parametrize("method_name", ["pte", "pte-itemonly"])
def test_held_out_users_get_a_user_term_from_their_context_only(tiny_dataset, tmp_path, monkeypatch, method_name):
    """cold_users: validation users are profiled at fit from their context, test users at scoring from the
    sequence the protocol gives; neither ever sees its valid / test item; every scored user has a user term."""
    from bench.eval.ranking import test_user_histories
    from methods.pte.method import PtE

    generator = FakeGenerator()
    monkeypatch.setattr(PtE, "_generator", lambda self, ctx: generator)
    generator.load = lambda: (type("M", (), {"parameters": lambda self: iter(())})(), None)
    generator.model_dir = "fake"
    calls = []
    real = ProfileStage.profile_heldout
    monkeypatch.setattr(ProfileStage, "profile_heldout",
                        lambda self, histories, raw: calls.append(dict(histories)) or real(self, histories, raw))
    split = make_split(tiny_dataset, "cold_users",
                       resolve_split_params("cold_users", {"valid_fraction": 0.2, "test_fraction": 0.2}))
    config = backbone_settings("sasrec", {"epochs": 2, "embedding_size": 16, "train_batch_size": 64,
                                                "stopping_step": 1})
    method = METHODS.create(method_name, {"batch_size": 16})
    ctx = FitCall(dataset=tiny_dataset, split=split, seed=0, device="cpu", run_dir=tmp_path / "run",
                  cache_dir=tmp_path, backbone="sasrec", backbone_settings=config, encoder=HashEncoder(),
                  embed_items=lambda: hash_encode(tiny_dataset.item_text.tolist()))
    ctx.run(method)
    users = np.sort(split.test["user"].unique())
    score_test_users(method, split, users)
    valid_users, test_users = set(split.valid["user"]), set(users)
    table = method.cf.model.user_term.frozen
    rows = method.cf.token_index("user_id", sorted(valid_users | test_users))
    assert (rows > 0).all() and (table[rows].abs().sum(dim=1) > 0).all()
    if method_name == "pte-itemonly":  # no user profiles: a held-out user is the mean of its items' embeddings
        assert calls == []
        return
    assert [set(c) for c in calls] == [valid_users, test_users]
    context = split.context.sort_values(["user", "timestamp", "item"], kind="mergesort")
    expected_valid = {u: list(g) for u, g in context[context["part"] == "valid"].groupby("user")["item"]}
    assert calls[0] == expected_valid
    assert {u: tuple(h) for u, h in calls[1].items()} == test_user_histories(split)
    for part, frame in (("valid", split.valid), ("test", split.test)):
        for user, item in zip(frame["user"], frame["item"]):
            assert item not in calls[0 if part == "valid" else 1][user]
    # a second scoring profiles nobody again
    score_test_users(method, split, users)
    assert len(calls) == 2


def test_heldout_users_none_is_the_zero_user_term_of_version_1(tiny_dataset, tmp_path, monkeypatch):
    from methods.pte.method import PtE

    generator = FakeGenerator()
    monkeypatch.setattr(PtE, "_generator", lambda self, ctx: generator)
    generator.load = lambda: (type("M", (), {"parameters": lambda self: iter(())})(), None)
    generator.model_dir = "fake"
    split = make_split(tiny_dataset, "cold_users",
                       resolve_split_params("cold_users", {"valid_fraction": 0.2, "test_fraction": 0.2}))
    config = backbone_settings("sasrec", {"epochs": 1, "embedding_size": 16, "train_batch_size": 64})
    method = METHODS.create("pte", {"batch_size": 16, "heldout_users": "none"})
    FitCall(dataset=tiny_dataset, split=split, seed=0, device="cpu", run_dir=tmp_path / "run", cache_dir=tmp_path,
            backbone="sasrec", backbone_settings=config, encoder=HashEncoder(),
            embed_items=lambda: hash_encode(tiny_dataset.item_text.tolist())).run(method)
    users = np.sort(split.test["user"].unique())
    score_test_users(method, split, users)
    table = method.cf.model.user_term.frozen
    held = method.cf.token_index("user_id", sorted(set(split.valid["user"]) | set(users)))
    trained = method.cf.token_index("user_id", sorted(set(split.train["user"])))
    assert float(table[held].abs().sum()) == 0.0 and (table[trained].abs().sum(dim=1) > 0).all()


def test_after_grpo_held_out_users_get_stage_passes_from_the_untuned_generator(tiny_dataset, tmp_path):
    """GRPO tunes the generator of the sampled candidates only: a held-out user's U0 / U_r come from the
    profile stage's generator, as the training users' did, and its candidates from the tuned one."""
    base, tuned = FakeGenerator(), FakeGenerator()
    stage = ProfileStage(tiny_dataset.interactions, tiny_dataset.items["title"], tiny_dataset.item_text, base,
                         PromptSet(), ProfileStore(tmp_path / "store"), hash_encode,
                         PtESettings(batch_size=8, max_rounds=1), progress=False,
                         grpo=lambda stage, groups: tuned)
    stage.run(_raw(tiny_dataset))
    stage_rows, tuned_rows = base.rows, tuned.rows
    assert tuned_rows == tiny_dataset.interactions["user"].nunique()  # the K=2 user candidates after GRPO
    history = {"new-user": list(tiny_dataset.item_ids[:5])}
    profiles, stats, passes = stage.profile_heldout(history, _raw(tiny_dataset))
    assert [p["pass"] for p in passes] == ["held-out U0", "held-out U1", "held-out U-cand1"]
    assert base.rows - stage_rows == 2 and tuned.rows - tuned_rows == 1 and stats.generated == 3
    assert set(profiles) == {"new-user"}
