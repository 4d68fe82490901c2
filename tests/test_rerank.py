"""TALLRec / CoLLM / ICL as rankers (methods/collm/rerank.py): the full-catalogue ranking (N candidates first in
P(Yes) order, the rest in retrieval order), candidates (unseen, the retrieval backbone's top-N, the `random` row's
scores, seeded and hashed, saved with the run), Yes/No pairs built from the TrainView only, prefix-cached scores
equal to per-pair full prompts; on tiny synthetic data and a tiny random Llama (no downloads)."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from bench.catalog import METHODS  # noqa: E402
from bench.data.splits import make_split, resolve_split_params  # noqa: E402
from bench.errors import BenchError  # noqa: E402
from bench.hashing import sha256_file  # noqa: E402
from bench.options import RunOptions  # noqa: E402
from bench.types import RunContext, ScoreQuery, TrainView  # noqa: E402
from methods.collm import rerank_data as rd  # noqa: E402
from tests.conftest import ctr_dataset, make_dataset, score_test_users  # noqa: E402
from tests.contract import make_tiny_lm, tiny_backbone_settings, tiny_settings  # noqa: E402

N = 8  # candidates: fewer than the ~28 unseen items of a tiny user, so the "rest" part is not empty
ENTRIES = ("tallrec-rerank", "collm-mf-rerank", "icl-rerank")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    """The contract's tiny Llama with weights drawn N(0, 0.3): the default init gives near-constant outputs, in
    which a wrong position id in the cached path moves logits by < 1e-4 (this one moves them by ~2)."""
    from transformers import LlamaForCausalLM

    folder = make_tiny_lm(tmp_path_factory.mktemp("tiny-llama"))
    model = LlamaForCausalLM.from_pretrained(folder)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" not in name:
                param.normal_(0, 0.3)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def data():
    dataset = make_dataset()
    return dataset, make_split(dataset, "temporal_loo", resolve_split_params("temporal_loo", {}))


def fit(lm_dir, dataset, split, root, name="tallrec-rerank", backbone="mf", seed=0, cache="cache", options=None,
        **over):
    settings = tiny_settings(METHODS.get(name).Settings, lm_dir) | {"candidates": N} | over
    ctx = RunContext(seed=seed, device="cpu", run_dir=root / f"run-{name}-{seed}-{cache}", cache_dir=root / cache,
                     backbone=backbone, backbone_settings=tiny_backbone_settings(backbone),
                     options=RunOptions(progress=False, threads=1, **(options or {})))
    method = METHODS.create(name, settings)
    method.fit(TrainView.of(dataset, split), ctx)
    return method, ctx


@pytest.fixture(scope="module")
def fitted(lm_dir, data, tmp_path_factory):
    dataset, split = data
    return fit(lm_dir, dataset, split, tmp_path_factory.mktemp("rerank"))


def seen_of(split, item_ids):
    position = {item: k for k, item in enumerate(item_ids)}
    seen = pd.concat([split.train, split.valid])
    return {u: set(g.map(position)) for u, g in seen.groupby("user")["item"]}


# ------------------------------------------------------------------------------------------ the ranking
def test_candidates_first_in_p_yes_order_then_retrieval_order(fitted, data):
    method, _ = fitted
    dataset, split = data
    users = np.sort(split.test["user"].unique())
    matrix = method.score(ScoreQuery.of(users))
    reordered = 0
    for row, user in enumerate(users):
        ranked = method.rank_user(user)
        retrieval = method.retrieval.user_scores(user, None, dataset.item_ids)
        assert len(ranked.candidates) == N
        head, tail = ranked.ranking[:N], ranked.ranking[N:]
        assert set(head) == set(ranked.candidates)
        p_of = dict(zip(ranked.candidates, ranked.p_yes))
        assert all(p_of[a] >= p_of[b] for a, b in zip(head, head[1:])), "candidates not in P(Yes) order"
        expected_tail = [k for k in np.argsort(-retrieval.astype(np.float64), kind="stable") if k not in p_of]
        assert list(tail) == expected_tail, "the rest is not in retrieval order"
        reordered += list(head) != list(ranked.candidates)
        # the score row encodes exactly that ranking (strictly decreasing along it)
        assert np.array_equal(np.argsort(-matrix[row], kind="stable"), ranked.ranking)
    assert reordered > 0, "the LLM reordered no user's candidates"


def test_engine_ranking_is_the_reranked_list(fitted, data):
    """Through the engine's full ranking (train + valid masked): the top-N are the candidates in P(Yes) order."""
    from bench.eval.ranking import KS, rank_users

    method, _ = fitted
    dataset, split = data
    users = np.sort(split.test["user"].unique())
    seen = seen_of(split, dataset.item_ids)
    exclude = {u: np.array(sorted(v)) for u, v in seen.items()}
    top = rank_users(lambda b: method.score(ScoreQuery.of(b)), users, dataset.item_ids, {}, exclude)
    for row, user in enumerate(users):
        ranked = method.rank_user(user)
        expected = [k for k in ranked.ranking if k not in seen[user]][:max(KS)]
        assert list(top[row]) == expected
        assert list(top[row][:N]) == list(ranked.ranking[:N])


def test_candidates_are_the_unseen_top_n_of_the_random_row(fitted, data, tmp_path):
    """Candidates exclude train / valid items and are the top-N of the `random` method's scores on the same
    backbone and seed: the retrieval stage is the baseline row."""
    from methods.classic import RandomInit

    method, ctx = fitted
    dataset, split = data
    baseline = RandomInit(name="random")
    baseline.fit(TrainView.of(dataset, split), RunContext(
        seed=ctx.seed, device="cpu", run_dir=tmp_path / "random", cache_dir=tmp_path / "cache", backbone=ctx.backbone,
        backbone_settings=ctx.backbone_settings, options=ctx.options))
    users = np.sort(split.test["user"].unique())
    expected = baseline.score(ScoreQuery.of(users))
    np.testing.assert_array_equal(np.stack([method.retrieval.user_scores(u, None, dataset.item_ids) for u in users]),
                                  expected)
    seen = seen_of(split, dataset.item_ids)
    for row, user in enumerate(users):
        candidates = method.candidates[user]
        assert not set(candidates) & seen[user], "a train / valid item is a candidate"
        masked = expected[row].astype(np.float64).copy()
        masked[list(seen[user])] = -np.inf
        assert list(candidates) == list(np.argsort(-masked, kind="stable")[:N])


def test_same_seed_same_candidates_and_the_hash_matches_the_saved_file(fitted, lm_dir, data, tmp_path):
    method, ctx = fitted
    dataset, split = data
    facts = method.report.facts["rerank"]["candidates"]
    saved = ctx.run_dir / facts["file"]
    assert sha256_file(saved) == facts["sha256"] and facts["n"] == N
    assert {u: list(v) for u, v in rd.read_candidates(saved, dataset.item_ids).items()} == \
        {u: list(v) for u, v in method.candidates.items()}
    with gzip.open(saved, "rt") as handle:
        assert handle.readline() == "user\tcandidates\n"
    # another LLM on the same split / backbone / seed, with an empty cache: the same file, byte for byte
    other, other_ctx = fit(lm_dir, dataset, split, tmp_path, name="icl-rerank", cache="fresh")
    assert other.report.facts["rerank"]["candidates"]["sha256"] == facts["sha256"]
    assert not other.report.facts["rerank"]["retrieval"]["cached"]
    # and with the shared cache, the retrieval stage is not trained again
    shared, _ = fit(lm_dir, dataset, split, tmp_path, name="icl-rerank", cache="fresh", seed=0)
    assert shared.report.facts["rerank"]["retrieval"]["cached"]
    # another seed: another retrieval model, other candidates
    seeded, _ = fit(lm_dir, dataset, split, tmp_path, name="icl-rerank", cache="fresh", seed=1)
    assert seeded.report.facts["rerank"]["candidates"]["sha256"] != facts["sha256"]


# ------------------------------------------------------------------------------------------ pairs
def test_yes_no_pairs_come_from_train_and_valid_only(data):
    dataset, split = data
    view = TrainView.of(dataset, split)
    spec = rd.PairSpec(history_length=3, negatives_per_positive=2, max_train_pairs=0, max_valid_pairs=0, seed=0)
    pairs, info = rd.pointwise_view(view, spec)
    train, valid = pairs.train, pairs.valid
    as_set = lambda f: set(zip(f["user"], f["item"]))  # noqa: E731
    positives = train[train["label"] == 1]
    assert as_set(positives) == as_set(split.train) and len(positives) == len(split.train)
    assert as_set(valid[valid["label"] == 1]) == as_set(split.valid)
    assert not as_set(positives) & as_set(split.test), "a test interaction is a training positive"
    seen = as_set(split.train) | as_set(split.valid)
    negatives = pd.concat([train[train["label"] == 0], valid[valid["label"] == 0]])
    assert len(negatives) == 2 * (len(split.train) + len(split.valid))
    assert not as_set(negatives) & seen, "an observed item sampled as a negative"
    # histories: the user's earlier training items (train pairs), its training sequence (valid pairs)
    seqs = rd.user_sequences([split.train])
    for frame in (train, valid):
        last = None
        for user, item, label, hist in zip(frame["user"], frame["item"], frame["label"], frame["history"]):
            hist, seq = tuple(json.loads(hist)), seqs[user]
            if label == 0:  # a negative shares its positive's history
                assert hist == last
                continue
            expected = seq[-3:] if frame is valid else seq[max(0, seq.index(item) - 3):seq.index(item)]
            assert hist == tuple(expected)
            last = hist
    assert info["train"]["positives"] == len(split.train) and info["valid"]["negatives"] == 2 * len(split.valid)
    # seeded; the cap keeps whole positive groups; the valid sample does not depend on the training cap
    again, _ = rd.pointwise_view(view, spec)
    pd.testing.assert_frame_equal(again.train, train)
    capped, capped_info = rd.pointwise_view(view, rd.PairSpec(3, 2, 30, 0, 0))
    assert len(capped.train) == 30 and capped_info["train"]["positives"] == 10
    pd.testing.assert_frame_equal(capped.valid, valid)


def test_pairs_never_see_test_even_when_it_changes(data):
    """The builder's input is the TrainView: replacing the test part changes nothing."""
    from dataclasses import replace

    dataset, split = data
    spec = rd.PairSpec(10, 1, 64, 32, 0)
    base, _ = rd.pointwise_view(TrainView.of(dataset, split), spec)
    other = replace(split, test=split.test.assign(item=split.test["item"].iloc[::-1].to_numpy()))
    changed, _ = rd.pointwise_view(TrainView.of(dataset, other), spec)
    pd.testing.assert_frame_equal(base.train, changed.train)
    pd.testing.assert_frame_equal(base.valid, changed.valid)


# ------------------------------------------------------------------------------------------ prefix cache
@pytest.mark.parametrize("name", ["tallrec-rerank", "collm-mf-rerank"])
def test_prefix_cached_scores_equal_per_pair_full_prompts(lm_dir, data, tmp_path, name):
    from methods.collm import model as cm

    dataset, split = data
    method, _ = fit(lm_dir, dataset, split, tmp_path, name=name, options={"llm_eval_batch_size": 3})
    llm = method.llm
    for user in np.sort(split.test["user"].unique())[:4]:
        candidates = method.candidates[user]
        items = [dataset.item_ids[k] for k in candidates]
        hist = tuple(method.sequences[user])[-method.settings.history_length:]
        cached = llm.logits([user] * N, items, [hist] * N, cached=True)
        encoded = [llm.builder.encode(hist, item) for item in items]
        assert len({tuple(e.ids[:e.prefix_len]) for e in encoded}) == 1 and encoded[0].prefix_len > len(hist)
        with torch.no_grad():
            uv, iv = llm.vectors([user] * N, items, [hist] * N)
            single = torch.cat([cm.full_logits(llm.head, [encoded[k]], None if uv is None else uv[k:k + 1],
                                               None if iv is None else iv[k:k + 1], llm.pad_id, "cpu")
                                for k in range(N)])
        assert float((cached - single).abs().max()) < 1e-4
    # and the ranking does not depend on the option
    users = np.sort(split.test["user"].unique())[:4]
    plain, _ = fit(lm_dir, dataset, split, tmp_path, name=name, options={"prefix_cache": False})
    np.testing.assert_array_equal(plain.score(ScoreQuery.of(users)), method.score(ScoreQuery.of(users)))
    assert method.report.facts["rerank"]["scoring"]["prefix_cache"] is True
    assert plain.report.facts["rerank"]["scoring"]["prefix_cache"] is False


# ------------------------------------------------------------------------------------------ the rest
def test_entries_registered_on_every_recbole_backbone():
    from bench.backbones import BACKBONES

    for name in ENTRIES:
        cls = METHODS.get(name)
        assert cls.protocol == "ranking" and METHODS.family(name) == "collm"
        assert set(cls.backbones) == {k for k, v in BACKBONES.items() if v.recbole} >= {"lightgcn", "sasrec", "mf"}
        assert METHODS.defaults(name)["candidates"] == 50


def test_facts_recorded(fitted, data):
    method, _ = fitted
    dataset, split = data
    users = np.sort(split.test["user"].unique())[:2]
    before = method.report.facts["rerank"]["scoring"]["llm_pairs"]
    method.score(ScoreQuery.of(users))
    facts = method.report.facts["rerank"]
    assert facts["scoring"]["llm_pairs"] == before + 2 * N and facts["scoring"]["ms_per_user"] > 0
    assert facts["retrieval"]["backbone"] == "mf" and facts["pairs"]["negatives_per_positive"] == 1
    assert facts["selection"]["stage1"]["metric"] == "valid_auc"
    assert method.report.facts["llm"]["n_train_pairs_used"] == 16


def test_bad_input_is_one_line(lm_dir, tmp_path):
    with pytest.raises(BenchError, match="candidates"):
        METHODS.create("tallrec-rerank", {"candidates": 0})
    with pytest.raises(BenchError, match="negatives_per_positive"):
        METHODS.create("collm-mf-rerank", {"negatives_per_positive": "many"})
    dataset = ctr_dataset()
    split = make_split(dataset, "ctr_temporal", resolve_split_params(
        "ctr_temporal", {"train_months": 4, "valid_months": 2, "test_months": 2}))
    with pytest.raises(BenchError, match="ranking split"):
        fit(lm_dir, dataset, split, tmp_path)


def test_held_out_users_get_candidates_from_their_given_history(lm_dir, tmp_path):
    """cold_users on SASRec: a test user absent from training is scored from the history the query gives it;
    its candidates exclude that history and are recorded."""
    dataset = make_dataset()
    split = make_split(dataset, "cold_users", resolve_split_params("cold_users", {"valid_fraction": 0.2,
                                                                                  "test_fraction": 0.2}))
    method, _ = fit(lm_dir, dataset, split, tmp_path, name="icl-rerank", backbone="sasrec")
    scores = score_test_users(method, split)
    context = split.context[split.context["part"] == "test"]
    position = {item: k for k, item in enumerate(dataset.item_ids)}
    recorded = method.report.facts["rerank"]["heldout_candidates"]
    for row, user in enumerate(np.sort(split.test["user"].unique())):
        history = set(context.loc[context["user"] == user, "item"].map(position))
        top = np.argsort(-scores[row], kind="stable")[:N]
        assert not set(top) & history and len(recorded[user]) == N
        assert [dataset.item_ids[k] for k in sorted(top)] == sorted(recorded[user], key=lambda i: position[i])


def test_default_prompts_put_the_target_last_and_survive_partial_settings():
    from methods.collm import model as cm

    for name, prompt in (("tallrec-rerank", cm.TEXT_RERANK_PROMPT), ("icl-rerank", cm.TEXT_RERANK_PROMPT),
                         ("collm-mf-rerank", cm.COLLM_RERANK_PROMPT)):
        llm = METHODS.create(name, {"llm": {"batch_size": 4}}).settings.llm
        assert llm.prompt == prompt and llm.batch_size == 4
        tail = prompt[prompt.index(cm.TITLE) + len(cm.TITLE):]
        assert tail.replace(cm.ITEM, "").replace(" with the feature ", "") == "? #Answer:"
    assert METHODS.create("collm-mf-rerank").settings.llm.stage1_prompt == cm.TEXT_RERANK_PROMPT
    assert METHODS.create("tallrec").settings.prompt == cm.TEXT_PROMPT  # the ctr rows keep the papers' prompt


def test_test_users_setting_asks_the_engine_for_a_seeded_sample(lm_dir, data, tmp_path):
    from bench.eval.ranking import evaluate_ranking

    dataset, split = data
    assert METHODS.create("tallrec-rerank").test_user_sample() == 0
    method, _ = fit(lm_dir, dataset, split, tmp_path, name="icl-rerank", test_users=5)
    assert method.test_user_sample() == 5
    summary, per_user, evaluation = evaluate_ranking(method, dataset, split)
    assert len(per_user) == 5 and evaluation["test_user_sample"] == {"users": 5, "of": split.test["user"].nunique()}
    assert method.report.facts["rerank"]["scoring"]["users"] == 5


def test_candidates_respect_the_splits_candidate_restriction(lm_dir, tmp_path):
    """cold_items with `candidates: cold`: the engine ranks only items without a training interaction, so every
    candidate is one of them (a warm candidate would be masked, a wasted slot)."""
    dataset = make_dataset()
    split = make_split(dataset, "cold_items", resolve_split_params("cold_items", {"candidates": "cold"}))
    method, _ = fit(lm_dir, dataset, split, tmp_path, name="icl-rerank", candidates=4)
    warm = set(split.train["item"])
    assert method.candidates and all(
        len(c) == 4 and not {dataset.item_ids[k] for k in c} & warm for c in method.candidates.values())


def test_collm_reranker_cf_model_learns_from_every_training_positive(lm_dir, data, tmp_path):
    """`max_train_pairs` caps the LLM's Yes / No pairs only: CoLLM's CF model pre-trains on every training
    positive's pairs (the view's `train_all`), no positive a test interaction; the LLM's pairs are unchanged."""
    dataset, split = data
    view = TrainView.of(dataset, split)
    capped, _ = rd.pointwise_view(view, rd.PairSpec(3, 1, 16, 0, 0))
    with_all, info = rd.pointwise_view(view, rd.PairSpec(3, 1, 16, 0, 0, all_train_pairs=True))
    pd.testing.assert_frame_equal(with_all.train, capped.train)  # the LLM's pairs as before
    assert with_all.split.content_hash == capped.split.content_hash and capped.split.train_all is None
    as_set = lambda f: set(zip(f["user"], f["item"]))  # noqa: E731
    every = with_all.train_all
    assert as_set(every[every["label"] == 1]) == as_set(split.train) and len(every) == 2 * len(split.train)
    # a negative is any item the user has in neither train nor valid (the method cannot know test): no positive is
    # a test interaction
    assert not as_set(every[every["label"] == 1]) & as_set(split.test) and info["train_all"]["pairs"] == len(every)
    method, _ = fit(lm_dir, dataset, split, tmp_path, name="collm-mf-rerank", max_train_pairs=16)
    cf = method.report.facts["cf"]
    assert cf["n_train_pairs"] == 2 * len(split.train) and cf["pairs"] == "train_all"
    assert cf["n_llm_train_pairs"] <= 16
    old, _ = fit(lm_dir, dataset, split, tmp_path, name="collm-mf-rerank", max_train_pairs=16,
                 llm={**tiny_settings(METHODS.get("collm-mf-rerank").Settings, lm_dir)["llm"],
                      "cf_pretrain_pairs": "train"})
    assert old.report.facts["cf"]["n_train_pairs"] == 16
