"""CoLLM / TALLRec (paper 002): the ctr_temporal split, AUC / UAUC, placeholder splicing, prefix-cached
scoring, bad-input errors and a tiny end-to-end run, on a tiny Llama built in a fixture (no downloads)."""

from __future__ import annotations

import json
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


@pytest.mark.parametrize("name", ["tallrec", "collm-mf"])
def test_bf16_precision_autocasts_training_and_scoring(tiny_lm, split, tmp_path, name):
    """`precision: bf16`: the same pairs and seed, trained and scored under bfloat16 autocast. Its logits are
    close to fp32's but not equal (it is a setting: it changes numbers), its stage-1 adapter has its own cache
    key, and each precision's scores are reproducible."""
    fp32 = _method(name, tiny_lm, max_train_pairs=8)
    _ctx(split, tmp_path, name="fp32").run(fp32)
    bf16 = _method(name, tiny_lm, max_train_pairs=8, precision="bf16")
    _ctx(split, tmp_path, name="bf16").run(bf16)
    assert bf16.report.facts["stage1"]["key"] != fp32.report.facts["stage1"]["key"]
    test = split.test
    users, items = list(test["user"]), list(test["item"])
    hists = [fp32.histories.get(ScoreQuery.of([]), u, i) for u, i in zip(users, items)]
    a, b = fp32.logits(users, items, hists), bf16.logits(users, items, hists)
    assert a.dtype == b.dtype == torch.float32
    assert not torch.equal(a, b)
    assert torch.allclose(a, b, atol=0.25), float((a - b).abs().max())
    assert torch.equal(b, bf16.logits(users, items, hists))
    with bf16.autocast():  # the context is bf16 autocast on the method's device
        assert torch.is_autocast_enabled(torch.device(bf16.device).type)
    with fp32.autocast():
        assert not torch.is_autocast_enabled(torch.device(fp32.device).type)


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


def test_identical_answer_tokens_are_a_settings_error():
    from bench.catalog import METHODS

    with pytest.raises(BenchError, match="the Yes and No answers must differ"):
        METHODS.settings("icl", {"answer_tokens": [" Yes", " Yes"]})
    with pytest.raises(BenchError, match="an answer is empty"):
        METHODS.settings("tallrec-rerank", {"llm": {"answer_tokens": ["Yes", " "]}})


def test_answer_tokens_that_are_one_token_id_are_refused(tiny_lm):
    from methods.llm.load import load_tokenizer

    with pytest.raises(cm.AnswerTokenError, match="are the same token"):
        cm.answer_token_ids(load_tokenizer(tiny_lm), ["Yes", " Yes"])  # the same word-level token


@pytest.mark.parametrize(("over", "message"), [
    ({"answer_tokens": ["Maybe Yes", "No"]}, "method 'icl': answer 'Maybe Yes' is not a single token"),
    ({"prompt": "Would the user like it? <HisItemTitleList>"}, "method 'icl': prompt template must contain "
                                                                "<TargetItemTitle> exactly once"),
])
def test_tokenizer_checks_run_before_any_work(tiny_lm, tmp_path, capsys, monkeypatch, over, message):
    """Answer tokens and prompt templates are checked from the tokenizer when `bench run` starts: exit 2, one
    line, nothing prepared or trained."""
    import bench.executors
    from bench.cli import main

    monkeypatch.setattr(bench.executors, "run_specs", lambda *a, **k: pytest.fail("work started"))
    argv = ["run", "--dataset", "ml-100k", "--split", "ctr_temporal", "--backbone", "none", "--method", "icl",
            "--set", f"method.base_model={tiny_lm}", "--set", 'method.answer_tokens=["Yes", "No"]',
            "--results", str(tmp_path / "r"), "--cache", str(tmp_path / "c")]
    for key, value in over.items():
        argv += ["--set", f"method.{key}={json.dumps(value)}"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "c").exists()


def test_the_longest_prompt_is_checked_with_the_data_before_any_run(tmp_path, split):
    """`check_data` (bench.runner.preflight, after the shared preparation): the longest prompt a pair can have
    against the model's context, from its tokenizer and config; nothing is loaded or trained."""
    from bench.types import TrainView

    short = make_tiny_lm(tmp_path / "short", max_positions=40)
    method = _method("tallrec", short)
    method.check_inputs(tmp_path / "cache")  # tokenizer checks pass
    view = TrainView.of(split_dataset(split), split)
    with pytest.raises(cm.ContextLengthError, match="method 'tallrec': scored pairs: the longest prompt"):
        method.check_data(view, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()
    _method("tallrec", make_tiny_lm(tmp_path / "long", max_positions=4096)).check_data(view, tmp_path / "cache")


def test_a_reranker_on_a_pointwise_split_is_refused_before_any_run(tiny_lm, split, tmp_path):
    from bench.catalog import METHODS
    from bench.types import TrainView

    method = METHODS.create("tallrec-rerank", {"llm": {**FAST, "base_model": str(tiny_lm)}})
    method.check_inputs(tmp_path)
    with pytest.raises(BenchError, match="reranks on a ranking split"):
        method.check_data(TrainView.of(split_dataset(split), split), tmp_path)


# ---------------------------------------------------------------------------------------- end to end
def test_stage1_lora_is_cached_and_shared(tiny_lm, split, tmp_path):
    ctx = _ctx(split, tmp_path, name="a")
    tallrec = _method("tallrec", tiny_lm, stage1_loss="yes_no_softmax")  # TALLRec version 3's loss
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


# ------------------------------------------------------------- few-shot: the CF encoder learns from every pair
@pytest.fixture
def fewshot():
    """The tiny ctr split with a 16-pair few-shot sample, and the same split on every training pair."""
    dataset = ctr_dataset()
    _DATASETS[dataset.content_hash] = dataset
    return ctr_split(dataset, shots=16), ctr_split(dataset)


def test_fewshot_split_keeps_all_training_pairs_apart(fewshot, tmp_path, capsys):
    """`shots` limits `train`; `train_all` holds every training pair (the shots=0 split's train), survives the
    cache round trip, is hash-checked, and leaves the content hash as it was (so no stored run moves)."""
    from bench.data.splits import _frames_hash, _hashed_frames, load_or_make_split
    from bench.hashing import write_manifest
    from bench.types import TrainView

    few, full = fewshot
    assert len(few.train) == 16 and full.train_all is None
    pd.testing.assert_frame_equal(few.train_all, full.train)
    assert set(zip(few.train["user"], few.train["item"])) <= set(
        zip(few.train_all["user"], few.train_all["item"]))
    pd.testing.assert_frame_equal(few.valid, full.valid)
    # the content hash covers what it always did (train_all has its own recorded hash)
    assert few.content_hash == _frames_hash(_hashed_frames(few.train, few.valid, few.test, few.user_segment,
                                                           few.item_segment, few.context))
    view = TrainView.of(split_dataset(few), few)
    assert len(view.train) == 16 and view.train_all is few.train_all
    assert TrainView.of(split_dataset(full), full).train_all is full.train  # no sample: train is all of them
    dataset = split_dataset(few)
    saved = load_or_make_split(dataset, "ctr_temporal", few.params, tmp_path)
    assert saved.content_hash == few.content_hash
    pd.testing.assert_frame_equal(saved.train_all, few.train_all)
    info = json.loads((saved.path / "split.json").read_text())
    assert info["counts"]["train_all"] == len(few.train_all) and "train_all.tsv" in info["files"]
    # a changed train_all.tsv is caught (its manifest rewritten too: the split's own check), the split rebuilt
    path = saved.path / "train_all.tsv"
    text = path.read_text()
    path.write_text(text.replace("\t1\t", "\t0\t", 1))
    assert path.read_text() != text
    write_manifest(saved.path, tmp_path)
    capsys.readouterr()
    again = load_or_make_split(dataset, "ctr_temporal", few.params, tmp_path)
    assert "train_all.tsv changed" in capsys.readouterr().err
    pd.testing.assert_frame_equal(again.train_all, few.train_all)
    # a few-shot split saved before train_all was kept (no layout, no file) is rebuilt, not read without it
    old = json.loads((again.path / "split.json").read_text())
    (again.path / "train_all.tsv").unlink()
    del old["files"]["train_all.tsv"], old["layout"], old["train_all_hash"], old["counts"]["train_all"]
    (again.path / "split.json").write_text(json.dumps(old))
    write_manifest(again.path, tmp_path)
    rebuilt = load_or_make_split(dataset, "ctr_temporal", few.params, tmp_path)
    assert "saved before few-shot splits kept all training pairs" in capsys.readouterr().err
    pd.testing.assert_frame_equal(rebuilt.train_all, few.train_all)


def _cf_fit(name, split, tmp_path, tiny_lm=None, seed=0, run="run", **over):
    from bench.catalog import METHODS

    if name == "mf-ctr":
        method = METHODS.create(name, {**CF_FAST, **over})
    else:
        method = _method(name, tiny_lm, **over)
    ctx = _ctx(split, tmp_path, seed=seed, name=run)
    ctx.run(method)
    return method, ctx


def test_collm_cf_encoder_trains_on_every_training_pair_at_16_shots(tiny_lm, fewshot, tmp_path):
    """(a) CoLLM at shots=16: the LLM sees the 16 pairs, its CF encoder every training pair; the old behaviour
    (`cf_pretrain_pairs: train`) trains it on the 16."""
    few, _ = fewshot
    method, ctx = _cf_fit("collm-mf", few, tmp_path, tiny_lm)
    cf = ctx.extra["cf"]
    assert len(ctx.data.train) == 16 and len(method.data.train) == 16
    assert cf["n_train_pairs"] == len(few.train_all) > 16 and cf["pairs"] == "train_all"
    assert cf["n_llm_train_pairs"] == ctx.extra["llm"]["n_train_pairs_used"] == 16
    assert cf["pretrain_pairs"] == "all" and cf["n_valid_pairs"] == len(few.valid)
    assert {"best_valid_auc", "epochs_run", "epochs_cap", "best_epoch", "early_stopped"} <= set(cf)
    old, old_ctx = _cf_fit("collm-mf", few, tmp_path, tiny_lm, run="old", cf_pretrain_pairs="train")
    assert old_ctx.extra["cf"]["n_train_pairs"] == 16 and old_ctx.extra["cf"]["key"] != cf["key"]


def test_collm_cf_encoder_at_16_shots_is_the_cf_baseline_at_0_shots(tiny_lm, fewshot, tmp_path):
    """(b) The CoLLM-MF encoder at shots=16 and the mf-ctr row at shots=0, same seed and CF settings: one cached
    model (same key, same weights); another seed trains its own."""
    few, full = fewshot
    baseline, base_ctx = _cf_fit("mf-ctr", full, tmp_path, run="mf")
    assert base_ctx.extra["training"]["cached"] is False
    collm, ctx = _cf_fit("collm-mf", few, tmp_path, tiny_lm, run="collm")
    assert ctx.extra["cf"]["cached"] is True and ctx.extra["cf"]["key"] == base_ctx.extra["training"]["key"]
    a, b = baseline.model.state_dict(), collm.cf.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the mf-ctr row at 16 shots is the few-shot baseline: its own model, on the 16 pairs
    _, few_ctx = _cf_fit("mf-ctr", few, tmp_path, run="mf16")
    assert few_ctx.extra["training"]["n_train_pairs"] == 16 and few_ctx.extra["training"]["cached"] is False
    _, other = _cf_fit("collm-mf", few, tmp_path, tiny_lm, seed=1, run="collm1")
    assert other.extra["cf"]["cached"] is False and other.extra["cf"]["key"] != ctx.extra["cf"]["key"]


def test_cf_convergence_recorded_at_the_cap_and_when_stopped_early(fewshot, tmp_path):
    """(d) `early_stopped` / `fit.converged`: False for a run that reaches its epoch cap, True for one the
    patience rule stopped; best_epoch and epochs_cap recorded; a cached info.json without them is derived."""
    from bench.hashing import write_manifest
    from methods.backbones.pointwise import convergence

    _, full = fewshot
    _, capped = _cf_fit("mf-ctr", full, tmp_path, run="capped", epochs=2, patience=5)
    info = capped.extra["training"]
    assert info["epochs_run"] == info["epochs_cap"] == 2 and info["early_stopped"] is False
    assert capped.report.converged is False
    _, early = _cf_fit("mf-ctr", full, tmp_path, run="early", epochs=60, patience=1, learning_rate=0.1)
    info = early.extra["training"]
    assert info["epochs_cap"] == 60 and info["epochs_run"] < 60 and info["early_stopped"] is True
    assert early.report.converged is True
    assert info["best_epoch"] == info["epochs_run"] - 2  # one epoch without gain after the best (patience 1)
    assert info["best_valid_auc"] == max(point["valid_auc"] for point in info["curve"])
    # an artifact cached before these keys existed: derived from its curve, as the loop decided
    folder = next((tmp_path / "cache" / "ctr_cf").glob(f"mf-{info['key']}"))
    stored = json.loads((folder / "info.json").read_text())
    for key in ("early_stopped", "epochs_cap", "best_epoch"):
        stored.pop(key)
    (folder / "info.json").write_text(json.dumps(stored))
    write_manifest(folder, tmp_path / "cache")  # as that artifact's manifest would say
    _, cached = _cf_fit("mf-ctr", full, tmp_path, run="early2", epochs=60, patience=1, learning_rate=0.1)
    again = cached.extra["training"]
    assert again["cached"] is True and cached.report.converged is True
    assert {k: again[k] for k in ("early_stopped", "epochs_cap", "best_epoch")} == {
        k: info[k] for k in ("early_stopped", "epochs_cap", "best_epoch")}
    # the rule on its own: patience epochs without gain after the first best, also at the cap's last epoch
    curve = lambda values: [{"epoch": k, "valid_auc": v} for k, v in enumerate(values)]  # noqa: E731
    assert convergence(curve([.5, .6, .7]), 3, 2) == {"epochs_cap": 3, "best_epoch": 2, "early_stopped": False}
    assert convergence(curve([.5, .7, .7, .6]), 10, 2)["early_stopped"] is True
    assert convergence(curve([.5, .7, .7, .6]), 10, 2)["best_epoch"] == 1
    assert convergence(curve([.5, .7, .6]), 3, 1)["early_stopped"] is True
    assert convergence(curve([.5, float("nan"), .4]), 5, 2) == {"epochs_cap": 5, "best_epoch": 0,
                                                                 "early_stopped": True}


def test_min_epochs_run_before_patience_may_stop(fewshot, tmp_path):
    """`min_epochs`: a flat start is not a plateau. With patience 1 a run stops after its first epoch without
    gain; with min_epochs 8 it runs at least 8 epochs, keeps the best state, and is recorded as stopped early."""
    from methods.backbones.pointwise import convergence

    _, full = fewshot
    _, early = _cf_fit("mf-ctr", full, tmp_path, run="early", epochs=40, patience=1, learning_rate=0.1)
    _, held = _cf_fit("mf-ctr", full, tmp_path, run="held", epochs=40, patience=1, learning_rate=0.1, min_epochs=8)
    first, late = early.extra["training"], held.extra["training"]
    assert first["epochs_run"] < 8 <= late["epochs_run"] < 40
    assert late["early_stopped"] is True and held.report.converged is True
    assert late["best_valid_auc"] == max(point["valid_auc"] for point in late["curve"])
    assert late["curve"][:first["epochs_run"]] == first["curve"]  # the same seed's epochs, only more of them
    curve = lambda values: [{"epoch": k, "valid_auc": v} for k, v in enumerate(values)]  # noqa: E731
    assert convergence(curve([.7, .6, .6]), 10, 2)["early_stopped"] is True
    assert convergence(curve([.7, .6, .6]), 10, 2, min_epochs=5)["early_stopped"] is False


# --------------------------------------------- LLM stages as the authors train them (schedule, selection, loss)
class _RecordingAdamW(torch.optim.AdamW):
    """AdamW that records each param group's learning rate at every step it takes (what the schedule applied)."""

    made: list = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rates: list[list[float]] = []
        _RecordingAdamW.made.append(self)

    def step(self, *args, **kwargs):
        self.rates.append([float(g["lr"]) for g in self.param_groups])
        return super().step(*args, **kwargs)


@pytest.fixture
def recorded_rates(monkeypatch):
    _RecordingAdamW.made = []
    monkeypatch.setattr(torch.optim, "AdamW", _RecordingAdamW)
    return _RecordingAdamW.made


def _scripted_auc(monkeypatch, values):
    """ValidSelection.auc returns `values` in turn; every evaluation keeps a copy of the tuned parameters."""
    from methods.collm.tuning import ValidSelection

    script, seen = iter(values), {}
    original = ValidSelection.evaluate

    def evaluate(self, step):
        original(self, step)
        seen[step] = [p.detach().clone() for p in self.params]

    monkeypatch.setattr(ValidSelection, "auc", lambda self: next(script))
    monkeypatch.setattr(ValidSelection, "evaluate", evaluate)
    return seen


def _lora(method):
    return [p.detach().clone() for n, p in method.lm.named_parameters() if "lora_" in n]


def test_schedule_learning_rates_are_applied_per_step(tiny_lm, split, tmp_path, recorded_rates):
    """Warmup then linear decay over epochs x batches per epoch (20 pairs, batch 8: 3 batches a pass, the last one
    ragged; 2 epochs = 6 steps): the rate each optimizer step used is lr x schedule_factor(step)."""
    from methods.llm.train import schedule_factor

    method = _method("tallrec", tiny_lm, max_train_pairs=20, epochs=2, warmup_steps=2, lr_schedule="linear")
    ctx = _ctx(split, tmp_path)
    ctx.run(method)
    stage1 = ctx.extra["stage1"]
    assert stage1["schedule"] == {"kind": "linear", "warmup_steps": 2, "total_steps": 6, "learning_rates": [1e-3]}
    assert stage1["steps"] == 6 and stage1["stopped_early"] is False
    (optimizer,) = recorded_rates
    expected = [1e-3 * schedule_factor(k, 2, 6, "linear") for k in range(6)]
    assert [r[0] for r in optimizer.rates] == pytest.approx(expected, rel=1e-12)
    assert expected[:3] == pytest.approx([1e-3 / 3, 2e-3 / 3, 1e-3]) and expected[-1] == pytest.approx(0.25e-3)


def test_collm_schedule_applies_to_both_steps_and_every_group(tiny_lm, split, tmp_path, recorded_rates):
    """CoLLM: step 1 (LoRA) and step 2 (mapper) each get the schedule over their own steps; t3's one step scales
    both its groups (mapper and LoRA rates) by the same factor. warmup_ratio 0.2 of 6 steps = 2 (rounded up)."""
    from methods.llm.train import schedule_factor

    over = {"max_train_pairs": 20, "epochs": 2, "warmup_ratio": 0.2, "lr_schedule": "cosine", "evaluations": 3,
            "mapper_learning_rate": 2e-3}
    ctx = _ctx(split, tmp_path)
    ctx.run(_method("collm-mf", tiny_lm, **over))
    factors = [schedule_factor(k, 2, 6, "cosine") for k in range(6)]
    step1, step2 = recorded_rates
    assert [r[0] for r in step1.rates] == pytest.approx([1e-3 * f for f in factors], rel=1e-12)
    assert [r[0] for r in step2.rates] == pytest.approx([2e-3 * f for f in factors], rel=1e-12)
    for stage in ("stage1", "stage2"):
        info = ctx.extra[stage]
        assert info["schedule"]["kind"] == "cosine" and info["schedule"]["warmup_steps"] == 2
        assert [p["step"] for p in info["selection"]["curve"]] == [2, 4, 6]
        assert info["selection"]["evaluations"] == 3 and info["selection"]["planned_evaluations"] == [2, 4, 6]
    recorded_rates.clear()
    ctx3 = _ctx(split, tmp_path, name="t3")
    ctx3.run(_method("collm-mf", tiny_lm, tuning="t3", **over))
    (one,) = recorded_rates
    assert [lr for r in one.rates for lr in r] == pytest.approx([lr for f in factors for lr in (2e-3 * f, 1e-3 * f)],
                                                                rel=1e-12)
    assert ctx3.extra["stage2"]["schedule"]["learning_rates"] == [2e-3, 1e-3]


def test_evaluations_spread_over_the_stage_and_the_best_state_is_kept(tiny_lm, split, tmp_path, monkeypatch):
    """`evaluations: 5` over 6 steps: 5 curve points (steps ceil(k x 6 / 5)); the adapter ends at the best one
    (the second here), not at the last step."""
    seen = _scripted_auc(monkeypatch, [0.55, 0.8, 0.6, 0.7, 0.65])
    method = _method("tallrec", tiny_lm, epochs=2, evaluations=5, eval_every=1)  # evaluations win over eval_every
    ctx = _ctx(split, tmp_path)
    ctx.run(method)
    stage1 = ctx.extra["stage1"]
    selection = stage1["selection"]
    assert stage1["loss"] == "lm" and stage1["steps"] == 6  # TALLRec's default: the causal-LM loss
    assert [p["step"] for p in selection["curve"]] == [2, 3, 4, 5, 6] == selection["planned_evaluations"]
    assert [p["valid_auc"] for p in selection["curve"]] == [0.55, 0.8, 0.6, 0.7, 0.65]
    assert selection["evaluations"] == 5 and selection["best_step"] == 3 and selection["best_valid_auc"] == 0.8
    assert selection["early_stopped"] is True and selection["stopped_early"] is False  # best before the last step
    final = _lora(method)
    assert all(torch.equal(a, b) for a, b in zip(final, seen[3]))
    assert not all(torch.equal(a, b) for a, b in zip(final, seen[6]))


def test_patience_stops_a_stage_early(tiny_lm, split, tmp_path, monkeypatch):
    """patience 2: two evaluations without a gain after the best end the stage (step 5 of 6); the best state is
    kept and the record says it stopped early (the fifth AUC is never asked for)."""
    seen = _scripted_auc(monkeypatch, [0.6, 0.7, 0.65, 0.64, 0.9])
    method = _method("tallrec", tiny_lm, epochs=2, evaluations=5, patience=2)
    ctx = _ctx(split, tmp_path)
    ctx.run(method)
    stage1 = ctx.extra["stage1"]
    selection = stage1["selection"]
    assert stage1["steps"] == 5 and stage1["stopped_early"] is True and stage1["schedule"]["total_steps"] == 6
    assert [p["step"] for p in selection["curve"]] == [2, 3, 4, 5] and selection["evaluations"] == 4
    assert selection["best_step"] == 3 and selection["stopped_early"] is True and selection["patience"] == 2
    assert all(torch.equal(a, b) for a, b in zip(_lora(method), seen[3]))
    builder = method.make_builder(method.settings.prompt, (cm.HISTORY, cm.TITLE))
    data = method.train_data
    lengths = [len(builder.encode(h, i).ids) for h, i in zip(data.histories, data.frame["item"])]
    assert 0 < stage1["tokens"] < 2 * sum(lengths)  # the steps run, not the budget
    # the rerankers' summary of the selection carries the count and the stop
    from methods.collm.rerank import LLMReranker

    summary = LLMReranker.selection({"stage1": stage1})["stage1"]
    assert summary["evaluations"] == 4 and summary["stopped_early"] is True


def test_selection_settings_need_validation():
    from bench.catalog import METHODS

    with pytest.raises(BenchError, match="need select_on_valid"):
        METHODS.create("tallrec", {"select_on_valid": False, "evaluations": 5})
    with pytest.raises(BenchError, match="need select_on_valid"):
        METHODS.create("collm-mf", {"select_on_valid": False, "patience": 2})
    assert METHODS.create("tallrec").settings.stage1_loss == "lm"
    assert METHODS.create("tallrec-rerank").settings.llm.stage1_loss == "lm"
    assert METHODS.create("ensemble-mf-tallrec").settings.llm.stage1_loss == "lm"
    assert METHODS.create("collm-mf").settings.stage1_loss == "scoring"  # CoLLM's step 1: BCE on the Yes logit
    assert METHODS.create("icl").settings.stage1_loss == "scoring"


def test_lm_loss_is_the_causal_lm_loss_on_the_answer(tiny_lm, split, tmp_path):
    """"lm" = HF's causal-LM loss of prompt + answer token with the prompt masked (-100), i.e. the cross-entropy
    over the whole vocabulary of the label's answer at the answer position; not the two-way softmax's."""
    import torch.nn.functional as F

    method = _method("tallrec", tiny_lm)
    ctx = _ctx(split, tmp_path)
    method.start_fit(ctx.data)
    method.run_seed = 0
    method.setup(ctx.ctx)
    data = method.train_data
    builder = method.make_builder(method.settings.prompt, (cm.HISTORY, cm.TITLE))
    encoded = [builder.encode(h, i) for h, i in zip(data.histories[:6], data.frame["item"][:6])]
    labels = torch.as_tensor(data.frame["label"].to_numpy()[:6].copy())
    assert 0 < int(labels.sum()) < 6  # both answers
    with torch.no_grad():
        got = cm.pair_loss(method.head, encoded, labels, "lm", method.pad_id, "cpu")
        yes, no = method.yes_no
        per_pair = []
        for e, label in zip(encoded, labels.tolist()):
            answer = yes if label == 1 else no
            ids = torch.tensor([e.ids + [answer]])
            masked = torch.tensor([[-100] * len(e.ids) + [answer]])
            per_pair.append(float(method.lm(input_ids=ids, labels=masked).loss))
        by_hand = []
        for e, label in zip(encoded, labels.tolist()):
            logits = method.lm(input_ids=torch.tensor([e.ids])).logits[0, -1]
            by_hand.append(float(torch.logsumexp(logits, -1) - logits[yes if label == 1 else no]))
        two_way = cm.pair_loss(method.head, encoded, labels, "yes_no_softmax", method.pad_id, "cpu")
        vocab = method.head.vocab_logits(cm.answer_hidden(method.head, encoded, None, None, method.pad_id, "cpu"))
    assert float(got) == pytest.approx(np.mean(per_pair), rel=1e-5) == pytest.approx(np.mean(by_hand), rel=1e-5)
    assert vocab.shape == (6, method.lm.config.vocab_size)
    assert float(got) > float(two_way)  # the whole vocabulary's normaliser, not two logits'
    # the loss trains the LoRA layers through the answer position
    params = method.add_lora(0)
    for p in params:
        p.requires_grad_(True)
    cm.pair_loss(method.head, encoded, labels, "lm", method.pad_id, "cpu").backward()
    assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in params)
    assert F.cross_entropy(vocab, torch.where(labels.bool(), yes, no)).item() == pytest.approx(float(got), rel=1e-6)


@pytest.mark.parametrize("over", [{}, {"epochs": 2, "select_on_valid": False}])
def test_default_schedule_is_the_plain_constant_rate_loop_bit_for_bit(tiny_lm, split, tmp_path, over):
    """With the new settings at their defaults (constant rate, no warmup, one evaluation per epoch, no patience)
    the adapter is bit for bit the one of a plain AdamW loop at a constant rate over the same seeded batches (the
    loop of the versions before schedules)."""
    from methods.llm.train import epoch_batches

    settings = {"stage1_loss": "yes_no_softmax", **over}  # TALLRec version 3's loss
    method = _method("tallrec", tiny_lm, **settings)
    ctx = _ctx(split, tmp_path)
    ctx.run(method)
    assert ctx.extra["stage1"]["schedule"]["kind"] == "constant"
    trained = _lora(method)

    ref = _method("tallrec", tiny_lm, **settings)
    ref.start_fit(ctx.data)
    ref.run_seed = 0
    ref.setup(ctx.ctx)
    params = ref.add_lora(0)
    for p in params:
        p.requires_grad_(True)
    s = ref.settings
    builder = ref.make_builder(s.prompt, (cm.HISTORY, cm.TITLE))
    data = ref.train_data
    encoded = [builder.encode(h, i) for h, i in zip(data.histories, data.frame["item"])]
    labels = torch.as_tensor(data.frame["label"].to_numpy().copy())
    optimizer = torch.optim.AdamW([{"params": params, "lr": s.learning_rate}], weight_decay=s.weight_decay)
    torch.manual_seed(0)
    for idx in epoch_batches(len(encoded), s.batch_size, s.epochs, np.random.default_rng(0)):
        ref.lm.train()
        logits = cm.full_logits(ref.head, [encoded[i] for i in idx], None, None, ref.pad_id, "cpu")
        cm.loss_fn(logits, labels[idx], "yes_no_softmax").backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    assert len(trained) == len(params) > 0
    assert all(torch.equal(a, b) for a, b in zip(trained, _lora(ref)))
