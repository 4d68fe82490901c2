"""CoLLM / TALLRec (paper 002): the ctr_temporal split, AUC / UAUC, placeholder splicing, prefix-cached
scoring, bad-input errors and a tiny end-to-end run, on a tiny Llama built in a fixture (no downloads)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")

from bench.data.splits import make_split, resolve_split_params  # noqa: E402
from bench.errors import BenchError  # noqa: E402
from bench.eval.pointwise import auc, evaluate_pairs, histories, uauc  # noqa: E402
from bench.types import ScoreQuery  # noqa: E402
from methods.collm import model as cm  # noqa: E402
from tests.conftest import (  # noqa: E402
    FitCall,
    ctr_dataset,  # noqa: E402
    score,
)


def ctr_split(dataset=None, **over):
    params = resolve_split_params("ctr_temporal", {"train_months": 4, "valid_months": 2, "test_months": 2,
                                                   **over})
    return make_split(dataset or ctr_dataset(), "ctr_temporal", params)


# ------------------------------------------------------------------------------------------- the split
def test_ctr_split_windows_labels_and_no_leakage():
    dataset = ctr_dataset()
    split = ctr_split(dataset)
    train, valid, test = split.train, split.valid, split.test
    assert len(train) and len(valid) and len(test)
    assert train["timestamp"].max() < valid["timestamp"].min() <= valid["timestamp"].max() < test["timestamp"].min()
    for part in (train, valid, test):
        assert set(part["label"]) <= {0, 1}
        assert (part["label"] == (part["rating"] >= 4)).all()
    pairs = lambda f: set(zip(f["user"], f["item"]))  # noqa: E731
    assert not pairs(test) & pairs(train) and not pairs(valid) & pairs(train) and not pairs(test) & pairs(valid)
    # segments: warm = user and item each with > 3 training pairs; cold = either absent from training
    nu, ni = train.groupby("user").size(), train.groupby("item").size()
    for _, row in test.iterrows():
        u, i = nu.get(row["user"], 0), ni.get(row["item"], 0)
        expected = "warm" if u > 3 and i > 3 else "cold" if u == 0 or i == 0 else "other"
        assert row["segment"] == expected
    assert {"warm", "cold"} <= set(test["segment"])
    assert "3.0" not in split.description and "label = rating >= 4" in split.description
    assert split.content_hash == ctr_split(dataset).content_hash


def test_ctr_split_is_saved_with_labels(tmp_path):
    from bench.data.splits import load_or_make_split

    dataset = ctr_dataset()
    params = resolve_split_params("ctr_temporal", {"train_months": 4, "valid_months": 2, "test_months": 2})
    made = load_or_make_split(dataset, "ctr_temporal", params, tmp_path)
    again = load_or_make_split(dataset, "ctr_temporal", params, tmp_path)
    assert made.content_hash == again.content_hash
    pd.testing.assert_frame_equal(made.test.reset_index(drop=True), again.test.reset_index(drop=True))
    assert list(again.test.columns) == ["user", "item", "rating", "timestamp", "label", "segment", "history"]


def test_histories_are_earlier_positives_only():
    split = ctr_split(history="window_start")
    train = histories(split, "train")
    for (_, row), hist in zip(train.frame.iterrows(), train.histories):
        earlier = split.train[(split.train["user"] == row["user"]) & (split.train["timestamp"] < row["timestamp"])
                              & (split.train["label"] == 1)].sort_values("timestamp")
        assert hist == tuple(earlier["item"].to_numpy()[-10:])
    test = histories(split, "test")  # window_start: frozen at the test window, shared by the user's pairs
    for user, group in pd.DataFrame({"user": test.frame["user"], "h": test.histories}).groupby("user"):
        assert group["h"].nunique() == 1
        assert not set(group["h"].iloc[0]) & set(split.test.loc[split.test["user"] == user, "item"])
    per_pair = histories(ctr_split(history="pair"), "test")
    assert any(len(a) > len(b) for a, b in zip(per_pair.histories, test.histories))


# ------------------------------------------------------------------------------------------- metrics
def test_auc_and_uauc_match_sklearn_and_skip_one_class_users():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    users = np.repeat(["a", "b", "c", "d"], 6)
    labels = rng.integers(0, 2, size=len(users))
    labels[users == "c"] = 1  # one class: skipped by UAUC
    labels[users == "a"] = [0, 1, 0, 1, 1, 0]
    scores = np.round(rng.random(len(users)), 1)  # ties included
    assert auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))
    value, table = uauc(users, labels, scores)
    expected = np.mean([roc_auc_score(labels[users == u], scores[users == u]) for u in ("a", "b", "d")])
    assert value == pytest.approx(expected)
    assert np.isnan(table.set_index("user").loc["c", "auc"])
    frame = pd.DataFrame({"user": users, "label": labels, "segment": np.where(np.arange(24) % 2, "warm", "cold")})
    summary, per_user = evaluate_pairs(frame, scores)
    assert summary["overall"]["n_users"] == 3 and summary["overall"]["n_pairs"] == 24
    warm = frame["segment"].to_numpy() == "warm"
    assert summary["pair:warm"]["auc"] == pytest.approx(roc_auc_score(labels[warm], scores[warm]))
    assert set(per_user.columns) >= {"user", "uauc", "warm:uauc", "cold:uauc"}


# ------------------------------------------------------------------------------------ tiny LLM fixture
def _vocab_text():
    sample = " ".join(f'"Movie {i}", "Movie {i}". "Movie {i}"?' for i in range(40))
    return cm.COLLM_PROMPT + cm.TEXT_PROMPT + sample + " Yes No Maybe"


def make_tiny_lm(folder, max_positions=512):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = sorted(set(re.findall(r"\w+|[^\w\s]+", _vocab_text())))
    vocab = {t: i for i, t in enumerate(["<unk>", "<pad>", "</s>", *words])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", pad_token="<pad>", eos_token="</s>")
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
                         pad_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    return make_tiny_lm(tmp_path_factory.mktemp("collm") / "tiny")


FAST = {"answer_tokens": ["Yes", "No"], "max_train_pairs": 24, "batch_size": 8,
        "learning_rate": 1e-3}
CF_FAST = {"embedding_size": 8, "epochs": 3, "batch_size": 64}


def _ctx(split, tmp_path, seed=0, name="run"):
    return FitCall(dataset=split_dataset(split), split=split, seed=seed, device="cpu", run_dir=tmp_path / name,
                      cache_dir=tmp_path / "cache", backbone="none")


_DATASETS: dict = {}


def split_dataset(split):
    return _DATASETS[split.dataset_hash]


@pytest.fixture
def split():
    dataset = ctr_dataset()
    _DATASETS[dataset.content_hash] = dataset
    return ctr_split(dataset)


def _method(name, tiny_lm, **over):
    from bench.catalog import METHODS

    cls = METHODS.get(name)
    settings = {**FAST, "base_model": str(tiny_lm), **over}
    if "collm" in name:
        settings.setdefault("cf", CF_FAST)
    return cls(cls.Settings.model_validate(settings))


# ------------------------------------------------------------------------------ splicing and scoring
def test_splice_changes_only_placeholder_positions(tiny_lm, split, tmp_path):
    method = _method("collm-mf", tiny_lm)
    _ctx(split, tmp_path).run(method)
    test = split.test.iloc[:3]
    hists = [method.histories.get(ScoreQuery.of([]), u, i) for u, i in zip(test["user"], test["item"])]
    encoded = [method.builder.encode(h, i) for h, i in zip(hists, test["item"])]
    ids, _, _ = cm.batch_tensors(encoded, 0, method.pad_id, "cpu")
    plain = method.head.embed(ids)
    with torch.no_grad():
        user_vecs, item_vecs = method.vectors(test["user"].to_numpy(), test["item"].to_numpy(), hists)
    rows, cols = cm.placeholder_index(encoded, "user_pos")
    spliced = cm.splice(plain, rows, cols, user_vecs[rows])
    rows2, cols2 = cm.placeholder_index(encoded, "item_pos")
    spliced = cm.splice(spliced, rows2, cols2, item_vecs[rows2])
    changed = (spliced != plain).any(-1)
    expected = torch.zeros_like(changed)
    expected[rows, cols] = True
    expected[rows2, cols2] = True
    assert torch.equal(changed, expected) and int(expected.sum()) == 6
    assert torch.allclose(spliced[rows, cols], user_vecs[rows])


@pytest.mark.parametrize("name", ["icl", "collm-mf", "collm-din"])
def test_prefix_cache_scoring_equals_full_scoring(tiny_lm, split, tmp_path, name):
    method = _method(name, tiny_lm, max_train_pairs=8)
    _ctx(split, tmp_path).run(method)
    test = split.test
    users, items = test["user"].to_numpy(), test["item"].to_numpy()
    hists = [method.histories.get(ScoreQuery.of([]), u, i) for u, i in zip(users, items)]
    fast = method.logits(list(users), list(items), hists, cached=True)
    full = method.logits(list(users), list(items), hists, cached=False)
    assert fast.shape == (len(test), 2)
    assert torch.allclose(fast, full, atol=1e-4), float((fast - full).abs().max())


# ------------------------------------------------------------------------------------------ bad input
def test_template_missing_placeholder_is_an_error(tiny_lm, split, tmp_path):
    method = _method("collm-mf", tiny_lm, prompt=cm.COLLM_PROMPT.replace("<UserID>", "the user"))
    with pytest.raises(cm.PromptTemplateError, match="<UserID>"):
        _ctx(split, tmp_path).run(method)
    with pytest.raises(BenchError, match="TargetItemTitle"):
        _ctx(split, tmp_path).run(_method("tallrec", tiny_lm, prompt="Would the user like it? <HisItemTitleList>"))


def test_answer_token_must_be_single(tiny_lm, split, tmp_path):
    with pytest.raises(cm.AnswerTokenError, match="Maybe Yes"):
        _ctx(split, tmp_path).run(_method("tallrec", tiny_lm, answer_tokens=["Maybe Yes", "No"]))


def test_history_longer_than_context_names_the_user(tmp_path, split):
    short = make_tiny_lm(tmp_path / "short", max_positions=40)
    with pytest.raises(cm.ContextLengthError, match="user '"):
        _ctx(split, tmp_path).run(_method("tallrec", short))
    assert not (tmp_path / "cache" / "collm").exists(), "training started before the check"


# ---------------------------------------------------------------------------------------- end to end
def test_stage1_lora_is_cached_and_shared(tiny_lm, split, tmp_path):
    ctx = _ctx(split, tmp_path, name="a")
    tallrec = _method("tallrec", tiny_lm)
    ctx.run(tallrec)
    stage1 = ctx.extra["stage1"]
    assert stage1["cached"] is False and stage1["steps"] == 3 and stage1["loss"] == "yes_no_softmax"
    assert [point["step"] for point in stage1["selection"]["curve"]] == [3]  # one epoch: one evaluation
    # CoLLM's step 1 is trained with its own scoring loss (BCE on the Yes logit): not TALLRec's adapter
    ctx2 = _ctx(split, tmp_path, name="b")
    collm = _method("collm-mf", tiny_lm)
    ctx2.run(collm)
    assert ctx2.extra["stage1"]["loss"] == "yes_logit" and ctx2.extra["stage1"]["key"] != stage1["key"]
    # ... unless told to use TALLRec's loss, and then the adapter is TALLRec's, from the cache
    ctx3 = _ctx(split, tmp_path, name="c")
    ctx3.run(_method("collm-mf", tiny_lm, stage1_loss="yes_no_softmax"))
    assert ctx3.extra["stage1"]["cached"] is True and ctx3.extra["stage1"]["key"] == stage1["key"]
    # offline cost: the prompt tokens each tuned step processed (epochs x the pairs' prompt lengths) and its
    # training seconds; a cached step reports what building it cost, so TALLRec's adapter costs the same twice
    builder = tallrec.make_builder(tallrec.settings.prompt, (cm.HISTORY, cm.TITLE))
    data = tallrec.train_data
    lengths = [len(builder.encode(h, i).ids) for h, i in zip(data.histories, data.frame["item"])]
    assert len(lengths) == len(data.frame) > 0
    assert ctx.extra["offline_cost"] == {"tokens": tallrec.settings.epochs * sum(lengths),
                                         "seconds": stage1["train_seconds"], "steps": ["stage1"]}
    assert ctx3.extra["offline_cost"]["tokens"] > ctx.extra["offline_cost"]["tokens"]  # + step 2's mapper
    assert ctx3.extra["offline_cost"]["steps"] == ["stage1", "stage2"]
    assert ctx3.extra["stage1"]["tokens"] == ctx.extra["offline_cost"]["tokens"]
    assert ctx3.extra["offline_cost"]["seconds"] == pytest.approx(
        stage1["train_seconds"] + ctx3.extra["stage2"]["train_seconds"])
    ctx4 = _ctx(split, tmp_path, seed=1, name="d")
    ctx4.run(_method("tallrec", tiny_lm))
    assert ctx4.extra["stage1"]["cached"] is False, "another seed must train its own LoRA"
    counts = collm.parameter_counts()
    assert counts.trainable == collm.trainable_counts["lora"] + collm.trainable_counts["mapper"]
    assert collm.trainable_counts["mapper"] == (8 * 80 + 80) + (80 * 32 + 32)
    a = score(tallrec, np.array(["5"]), np.array(["1", "2"]))
    hists = [tallrec.histories.get(ScoreQuery.of([]), "5", i) for i in ("1", "2")]
    expected = cm.probabilities(tallrec.logits(["5", "5"], ["1", "2"], hists), "yes_no_softmax").numpy()
    np.testing.assert_allclose(a[0], expected, rtol=1e-6)


def test_selection_on_validation_keeps_the_best_step(tiny_lm, split, tmp_path):
    """select_on_valid with eval_every 1: one validation AUC per step, and the adapter ends at the best one."""
    from methods.collm.tuning import ValidSelection

    method = _method("tallrec", tiny_lm, epochs=2, eval_every=1)
    ctx = _ctx(split, tmp_path)
    ctx.run(method)
    selection = ctx.extra["stage1"]["selection"]
    curve = selection["curve"]
    assert [point["step"] for point in curve] == list(range(1, ctx.extra["stage1"]["steps"] + 1))
    best = max(curve, key=lambda point: point["valid_auc"])
    assert selection["best_step"] == best["step"] and selection["best_valid_auc"] == best["valid_auc"]
    builder = method.make_builder(method.settings.prompt, (cm.HISTORY, cm.TITLE))
    again = ValidSelection(method, [], builder, "yes_no_softmax").auc()  # the state the run ended in
    assert again == pytest.approx(best["valid_auc"], abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("tuning", ["t1", "t2", "t3"])
def test_tuning_variants_train_the_right_parts(tiny_lm, split, tmp_path, tuning):
    method = _method("collm-lightgcn", tiny_lm, tuning=tuning, max_train_pairs=8)
    ctx = _ctx(split, tmp_path)
    ctx.run(method)
    keys = set(method.trainable_counts)
    assert keys == ({"lora", "mapper", "cf"} if tuning != "t3" else {"lora", "mapper"})
    assert ("stage1" in ctx.extra) == (tuning != "t3")
    assert method.parameter_counts().trainable == sum(method.trainable_counts.values())


@pytest.mark.slow
def test_uitoken_ablation_and_ensemble(tiny_lm, split, tmp_path):
    method = _method("collm-uitoken", tiny_lm, max_train_pairs=8)
    _ctx(split, tmp_path).run(method)
    assert set(method.trainable_counts) == {"lora", "mapper"}
    from bench.catalog import METHODS

    cls = METHODS.get("ensemble-mf-tallrec")
    ens = cls(cls.Settings.model_validate({"mf": CF_FAST, "llm": {**FAST, "base_model": str(tiny_lm),
                                                                   "max_train_pairs": 8}}))
    _ctx(split, tmp_path, name="ens").run(ens)
    out = score(ens, np.array(["5"]), np.array(["1", "2", "3"]))
    mf = 1 / (1 + np.exp(-score(ens.mf, np.array(["5"]), np.array(["1", "2", "3"])).astype(np.float64)))
    llm = score(ens.llm, np.array(["5"]), np.array(["1", "2", "3"]))
    np.testing.assert_allclose(out, (mf + llm) / 2, rtol=1e-6)  # the mean of MF's and the LLM's P(Yes)


@pytest.mark.slow
def test_end_to_end_ctr_run(tiny_lm, split, tmp_path):
    """`execute` on the pointwise split: AUC / UAUC overall and per pair segment, per-user sidecar."""
    from bench.eval.pointwise import auc, auc_interval
    from bench.records import ResultStore
    from bench.runner import execute
    from bench.spec import RunSpec

    dataset = split_dataset(split)
    import bench.runner as runner

    spec_cf = RunSpec(dataset="ctr-tiny", split="ctr_temporal", split_settings=split.params, backbone="none",
                      method="mf-ctr", method_settings=CF_FAST, seed=0)
    spec_llm = RunSpec(dataset="ctr-tiny", split="ctr_temporal", split_settings=split.params, backbone="none",
                       method="collm-sasrec", method_settings={**FAST, "base_model": str(tiny_lm), "cf": CF_FAST,
                                                               "max_train_pairs": 8}, seed=0)
    original = runner._dataset, runner._split
    runner._dataset = lambda spec, cache: dataset
    runner._split = lambda spec, ds, cache: split
    try:
        store = ResultStore(tmp_path / "results")
        for spec in (spec_cf, spec_llm):
            record = execute(spec, store, tmp_path / "cache")
            overall = record["metrics"]["overall"]
            per_user = store.per_user(spec.run_id)  # UAUC is the mean of the per-user AUCs the sidecar keeps
            assert overall["uauc"] == pytest.approx(per_user["uauc"].dropna().mean())
            assert overall["n_users"] == per_user["uauc"].notna().sum()
            assert per_user["n_pairs"].sum() == len(split.test)
            assert overall["n_pairs"] == len(split.test)
            assert {"pair:warm", "pair:cold"} <= set(record["metrics"])
            assert record["latency"]["per_pair_ms"] > 0 and record["params"]["trainable"] > 0
            assert "train" in record["timings"]
            # the scored pairs are saved beside the record; AUC and its user-bootstrap interval come from them
            pairs = store.pairs(spec.run_id)
            assert len(pairs) == len(split.test) and set(pairs["user"]) == set(split.test["user"])
            assert overall["auc"] == pytest.approx(auc(pairs["label"].to_numpy(), pairs["score"].to_numpy()))
            assert (overall["auc_ci_low"], overall["auc_ci_high"]) == pytest.approx(auc_interval(
                pairs["user"].to_numpy(), pairs["label"].to_numpy(), pairs["score"].to_numpy()))
            assert overall["auc_ci_low"] <= overall["auc"] <= overall["auc_ci_high"]
        assert record["params"]["frozen_online"] > 0
    finally:
        runner._dataset, runner._split = original


def test_prompt_is_tokenised_as_one_string_with_bos():
    """A byte-level BPE tokenizer: the prompt's ids are the tokenizer's ids of the whole text (BOS first),
    with no lone space token where a placeholder was; each ID placeholder is exactly one token."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    corpus = [cm.COLLM_PROMPT, cm.TEXT_PROMPT, '"Toy Story", "Heat", "Fargo"'] * 20
    bpe.train_from_iterator(corpus, vocab_size=400, min_frequency=1, special_tokens=["<s>", "<unk>", "<pad>"])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", unk_token="<unk>",
                                  pad_token="<pad>")
    titles = {"1": "Toy Story", "2": "Heat", "3": "Fargo"}
    text_builder = cm.PromptBuilder(tok, cm.TEXT_PROMPT, (cm.HISTORY, cm.TITLE), titles)
    encoded = text_builder.encode(("1", "2"), "3")
    text, _ = text_builder.render(("1", "2"), "3")
    assert encoded.ids == [tok.bos_token_id] + tok(text, add_special_tokens=False)["input_ids"]
    collm = cm.PromptBuilder(tok, cm.COLLM_PROMPT, (cm.HISTORY, cm.USER, cm.TITLE, cm.ITEM), titles)
    pair = collm.encode(("1", "2"), "3")
    pieces = tok.convert_ids_to_tokens(pair.ids)
    # no lone space token (byte-level BPE's "Ġ") at a placeholder, and the text after it kept: "feature <UserID>."
    assert pieces[pair.user_pos - 1] == "Ġfeature" and pieces[pair.user_pos + 1] == "."
    text_only = [p for k, p in enumerate(pieces) if k not in (pair.user_pos, pair.item_pos)]
    rendered, _ = collm.render(("1", "2"), "3")
    plain = tok.convert_ids_to_tokens(tok(rendered.replace(" " + cm.USER, "").replace(" " + cm.ITEM, ""),
                                          add_special_tokens=False)["input_ids"])
    assert text_only[1:] == plain  # the rest is the tokenizer's own tokenisation of the text
    assert pair.ids[pair.user_pos] == pair.ids[pair.item_pos] == collm.placeholder_id
    assert pair.ids.count(collm.placeholder_id) == 2 and 0 < pair.user_pos < pair.prefix_len <= pair.item_pos
    assert tok.decode(pair.ids[:pair.user_pos]).endswith("feature")
    # a user's pairs share the prefix token for token, whatever the target
    other = collm.encode(("1", "2"), "1")
    assert other.ids[:other.prefix_len] == pair.ids[:pair.prefix_len]
