"""LLM2Rec stages selected on validation (`evaluations`, `patience`, `valid_examples`): the generic best-state
helper, the saved state is the best evaluation's, the curve, patience, deterministic validation losses, the
stage cache key (unchanged at the defaults, the validation data's hash only when evaluating), the validation
data (the split's valid part, never test) and the record (stage.json, method_info, convergence)."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from bench.catalog import METHODS  # noqa: E402
from bench.errors import BenchError  # noqa: E402
from methods.llm.load import load_model, load_tokenizer  # noqa: E402
from methods.llm.train import BestState, spread_steps, train_loop  # noqa: E402
from methods.llm2rec import stages as st  # noqa: E402
from methods.llm2rec.method import item_titles, validation_sequences  # noqa: E402
from tests.test_llm2rec_stages import FAST, TITLES, sequences, weights  # noqa: E402
from tests.test_llm2rec_stages import tiny_dir as tiny_decoder  # noqa: E402, F401  (fixture)

# every training target is "star wars": a high constant rate first lowers, then overshoots the validation loss
# of other targets (on this tiny model: best at step 2 of 4), so a later step is worse than an earlier one
TRAIN = [("alien, heat", "star wars\n"), ("up", "star wars\n"), ("the matrix", "star wars\n"),
         ("toy story, up", "star wars\n")] * 2
VALID = [("alien, heat", "red blue red blue\n"), ("up", "blue queen red king\n")]
OVERSHOOT = {**FAST, "scheduler": "constant", "lr": 3e-2}
# the stage cache keys of default settings before the selection settings existed (stage folders keep them)
OLD_KEYS = {"csft": "105956da11faaf5a", "mntp": "9f351f70da58627d", "ic": "5aec0ed151eb8ddb"}


# ---------------------------------------------------------------- the generic helper


def test_best_state_keeps_the_best_step_and_stops_on_patience():
    weight = torch.nn.Parameter(torch.zeros(3))
    script = iter([3.0, 1.0, 2.0, float("nan"), 4.0, 0.5])
    states = {}

    def value():
        states[len(states) + 1] = weight.detach().clone()
        return next(script)

    selector = BestState([weight], value, patience=3)
    result = train_loop([weight], lambda p: torch.optim.SGD(p, lr=0.1), iter([[1]] * 10),
                        lambda _: (weight - 1).pow(2).sum(), steps=10, evaluate=selector.evaluate,
                        eval_steps={1, 2, 3, 4, 5, 6}, should_stop=selector.should_stop)
    assert result.stopped_early and result.steps == 5  # best at 2, then 3 evaluations without a gain
    selector.finish(result.steps, result.stopped_early)
    torch.testing.assert_close(weight.detach(), states[2], rtol=0, atol=0)
    summary = selector.summary()
    assert [c["step"] for c in summary["curve"]] == [1, 2, 3, 4, 5]
    assert summary["curve"][3]["value"] is None  # a non-finite value is recorded as None, never best
    assert summary["best_step"] == 2 and summary["best_value"] == 1.0 and summary["evaluations"] == 5
    assert summary["early_stopped"] and summary["stopped_early"] and summary["steps_run"] == 5
    json.dumps(summary, allow_nan=False)
    # no finite value at all: nothing to select on, the last state stays
    selector = BestState([weight], lambda: float("nan"))
    selector.evaluate(1)
    with torch.no_grad():
        weight.add_(1.0)
    last = weight.detach().clone()
    selector.finish(2)
    torch.testing.assert_close(weight.detach(), last, rtol=0, atol=0)
    assert selector.summary()["best_step"] == 2 and not selector.summary()["early_stopped"]


# ---------------------------------------------------------------- settings and cache keys


def test_default_settings_keep_the_old_stage_keys():
    for stage, key in OLD_KEYS.items():
        settings = st.resolve_settings(stage, {})
        assert st.stage_key(stage, "base-fp", "data-hash", settings)[0] == key
        # without evaluations the selection settings (and any validation data) change nothing
        idle = st.resolve_settings(stage, {"valid_examples": 7})
        assert st.stage_key(stage, "base-fp", "data-hash", idle, valid="v1")[0] == key
        parts = st.stage_key(stage, "base-fp", "data-hash", idle, valid="v1")[1]
        assert "valid" not in parts and "evaluations" not in parts["settings"]
    # a non-default setting keys as before too (a suite's CPU caps)
    caps = st.resolve_settings("csft", {"max_steps": 40, "batch_size": 8, "lora": True})
    assert st.stage_key("csft", "base-fp", "data-hash", caps)[0] == "f58beb1afafa5ec6"


def test_stage_key_has_the_validation_data_only_when_evaluating():
    selecting = st.resolve_settings("csft", {"evaluations": 5})
    one = st.stage_key("csft", "base-fp", "data-hash", selecting, valid="v1")
    assert one[0] != OLD_KEYS["csft"] and one[1]["valid"] == "v1" and one[1]["settings"]["evaluations"] == 5
    assert st.stage_key("csft", "base-fp", "data-hash", selecting, valid="v2")[0] != one[0]
    more = st.resolve_settings("csft", {"evaluations": 5, "valid_examples": 64})
    assert st.stage_key("csft", "base-fp", "data-hash", more, valid="v1")[0] != one[0]
    with pytest.raises(BenchError, match="needs validation data"):
        st.stage_key("csft", "base-fp", "data-hash", selecting)


def test_run_stage_reuses_the_folder_whatever_the_validation_data_without_evaluations(tiny_decoder, tmp_path):  # noqa: F811
    calls = []

    def fn(out_dir):
        calls.append(out_dir)
        out_dir.mkdir()
        return {"steps": 1}

    cache = tmp_path / "cache"
    plain = st.run_stage("csft", tiny_decoder, "d", {"max_steps": 5}, cache, fn)
    assert st.run_stage("csft", tiny_decoder, "d", {"max_steps": 5}, cache, fn, valid_hash="v1") == plain
    assert len(calls) == 1 and "valid_hash" not in st.read_stage(plain)
    first = st.run_stage("csft", tiny_decoder, "d", {"max_steps": 5, "evaluations": 2}, cache, fn, valid_hash="v1")
    second = st.run_stage("csft", tiny_decoder, "d", {"max_steps": 5, "evaluations": 2}, cache, fn, valid_hash="v2")
    assert len({plain, first, second}) == 3 and len(calls) == 3
    assert st.read_stage(first)["valid_hash"] == "v1"


def test_patience_without_evaluations_is_one_clear_error():
    for settings in ({"patience": 2}, {"patience": 2, "evaluations": 0}):
        with pytest.raises(BenchError) as err:
            st.resolve_settings("mntp", settings)
        message = str(err.value)
        assert "\n" not in message and "patience" in message and "evaluations" in message
    with pytest.raises(BenchError, match=r"csft.*patience=1 needs evaluations > 0"):
        METHODS.settings("llm2rec", {"csft": {"patience": 1}})
    with pytest.raises(BenchError, match="valid_examples"):
        st.resolve_settings("ic", {"valid_examples": 0})
    assert st.resolve_settings("ic", {"evaluations": 3, "patience": 1}).patience == 1


# ---------------------------------------------------------------- selection in the stages


def test_csft_saves_the_best_steps_state_and_patience_stops_it(tiny_decoder, tmp_path):  # noqa: F811
    stats = st.csft(tiny_decoder, TRAIN, tmp_path / "best",
                    {**OVERSHOOT, "max_steps": 8, "evaluations": 8, "patience": 1}, valid=VALID)
    selection = stats["selection"]
    values = [c["value"] for c in selection["curve"]]
    assert selection["best_value"] == min(values) and values[selection["best_step"] - 1] == min(values)
    assert selection["early_stopped"]  # a later step was worse ...
    # ... and one evaluation without a gain (patience 1) ended the stage
    assert selection["stopped_early"] and selection["steps_run"] == selection["best_step"] + 1 < 8
    assert len(stats["losses"]) == stats["steps"] == selection["evaluations"] == selection["steps_run"]
    assert [c["step"] for c in selection["curve"]] == spread_steps(8, 8)[:selection["evaluations"]]
    assert selection["n_examples"] == len(VALID) and selection["metric"] == "valid_csft_loss"
    # the saved weights are those of a plain run stopped at the best step (same batches, constant rate):
    # the evaluations changed nothing in training, and the best state was restored before saving
    st.csft(tiny_decoder, TRAIN, tmp_path / "short", {**OVERSHOOT, "max_steps": selection["best_step"]})
    best, short, base = weights(tmp_path / "best"), weights(tmp_path / "short"), weights(tiny_decoder)
    assert all(torch.equal(best[k], short[k]) for k in best)
    assert any(not torch.equal(best[k], base[k]) for k in best)


def test_validation_losses_are_deterministic_and_leave_the_random_state(tiny_decoder):  # noqa: F811
    model = load_model(tiny_decoder, "cpu", "eager", use_cache=False)
    tokenizer = load_tokenizer(tiny_decoder)
    st.set_dropout(model, 0.2)
    model.train()
    ic = st.resolve_settings("ic", {**FAST, "evaluations": 1, "batch_size": 4})
    mntp = st.resolve_settings("mntp", {**FAST, "evaluations": 1, "mask_probability": 0.5})
    csft = st.resolve_settings("csft", {**FAST, "evaluations": 1})
    validators = {"ic": st.ic_validator(model, tokenizer, TITLES, ic, "cpu"),
                  "mntp": st.mntp_validator(model, tokenizer, TITLES, mntp, "cpu", 4, 64, [1, 2, 3]),
                  "csft": st.csft_validator(model, tokenizer, VALID, csft, "cpu")}
    for name, validate in validators.items():
        state = torch.get_rng_state()
        first, again = validate(), validate()
        assert first == again and np.isfinite(first), name
        assert torch.equal(torch.get_rng_state(), state), name  # training's dropout masks are untouched
        assert model.training, name  # back in train mode
    # IC's views come from dropout (train mode inside, even when the model was left in eval mode)
    with_dropout = validators["ic"]()
    model.eval()
    assert validators["ic"]() == with_dropout and model.training
    st.set_dropout(model, 0.0)
    assert validators["ic"]() < with_dropout  # identical views match more easily


def test_ic_evaluations_leave_training_unchanged(tiny_decoder, tmp_path):  # noqa: F811
    settings = {**FAST, "max_steps": 3, "batch_size": 8, "lr": 3e-3}
    plain = st.item_contrastive(tiny_decoder, TITLES, tmp_path / "plain", settings)
    evaluated = st.item_contrastive(tiny_decoder, TITLES, tmp_path / "sel", {**settings, "evaluations": 2},
                                    valid=TITLES[:6] + TITLES[:2])
    assert evaluated["losses"] == plain["losses"]  # the dropout masks of training did not move
    selection = evaluated["selection"]
    assert [c["step"] for c in selection["curve"]] == spread_steps(3, 2) == [2, 3]
    assert selection["n_examples"] == 6  # unique titles
    with pytest.raises(BenchError, match="at least 2 validation"):
        st.item_contrastive(tiny_decoder, TITLES, tmp_path / "bad", {**settings, "evaluations": 2}, valid=["up"])


def test_valid_sample_is_fixed_by_the_seed():
    settings = st.resolve_settings("csft", {"evaluations": 1, "valid_examples": 5, "seed": 3})
    items = list(range(20))
    sample = st.valid_sample(items, settings)
    assert len(sample) == 5 and sample == sorted(sample) and sample == st.valid_sample(items, settings)
    assert sample != st.valid_sample(items, settings.model_copy(update={"seed": 4}))
    assert st.valid_sample(items[:4], settings) == items[:4]


def test_pipeline_records_the_selection_of_every_stage(tiny_decoder, tmp_path):  # noqa: F811
    settings = {stage: {**FAST, "max_steps": 3, "evaluations": 2, "valid_examples": 3} for stage in st.STAGES}
    settings["mntp"].update(mask_probability=0.5, valid_examples=8)  # short titles: masks that select tokens
    train = sequences()
    valid = [(seq[:-1], [seq[-1]]) for seq in sequences()]
    cache = tmp_path / "cache"
    with pytest.raises(BenchError, match="need validation data"):
        st.pipeline(tiny_decoder, train, TITLES, settings, cache)
    folders = st.pipeline(tiny_decoder, train, TITLES, settings, cache, valid_sequences=valid)
    for stage, folder in folders.items():
        record = st.read_stage(folder)
        selection = record["selection"]
        assert [c["step"] for c in selection["curve"]] == [2, 3] and selection["evaluations"] == 2, stage
        assert selection["n_examples"] == (8 if stage == "mntp" else 3), stage
        assert record["key_parts"]["valid"] == record["valid_hash"], stage
        assert selection["metric"] == f"valid_{stage}_loss"
        assert all(np.isfinite(c["value"]) for c in selection["curve"]), stage
    # other validation data: new folders; the same: reused
    assert st.pipeline(tiny_decoder, train, TITLES, settings, cache, valid_sequences=valid) == folders
    other = st.pipeline(tiny_decoder, train, TITLES, {"csft": settings["csft"]}, cache, stages=("csft",),
                        valid_sequences=valid[1:])
    assert other["csft"] != folders["csft"]


def test_csft_valid_examples_follow_the_known_titles():
    examples = st.build_csft_valid_examples([(["a", "b", "c"], ["d"]), ([], ["x"]), (["p"], ["q", "r"])],
                                            max_history=2)
    assert examples == [("b, c", "d\n"), ("p", "q\n"), ("p, q", "r\n")]
    assert st.validation_inputs([(["a"], ["b"]), (["c"], ["b"])], {
        "csft": st.resolve_settings("csft", {}), "mntp": st.resolve_settings("mntp", {})})["ic"] == ["b"]


# ---------------------------------------------------------------- the method: valid part only, the record


def _fit_call(dataset, split_name, tmp_path, **split_settings):
    from bench.backbones import backbone_settings
    from bench.data.splits import make_split, resolve_split_params
    from tests.conftest import FitCall

    split = make_split(dataset, split_name, resolve_split_params(split_name, split_settings))
    config = backbone_settings("sasrec", {"epochs": 1, "embedding_size": 16, "train_batch_size": 64})
    return FitCall(dataset=dataset, split=split, seed=0, device="cpu", run_dir=tmp_path, cache_dir=tmp_path / "cache",
                   backbone="sasrec", backbone_settings=config)


def test_validation_data_is_the_valid_part_never_test(tiny_dataset, tmp_path):
    call = _fit_call(tiny_dataset, "temporal_loo", tmp_path)
    method = METHODS.create("llm2rec", {"csft": {"evaluations": 2}})
    method.start_fit(call.data)
    _, _, _, valid = method._training_data(call.ctx)
    titles = item_titles(tiny_dataset)
    assert titles.is_unique
    split = call.split
    users = sorted(split.valid["user"].unique())
    assert len(valid) == len(users)
    for user, (known, targets) in zip(users, valid):
        train = split.train[split.train["user"] == user].sort_values("timestamp")
        assert known == titles.reindex(train["item"]).tolist()
        assert targets == titles.reindex(split.valid[split.valid["user"] == user]["item"]).tolist()
        assert not set(titles.reindex(split.test[split.test["user"] == user]["item"])) & {*known, *targets}
    test_only = set(split.test["item"]) - set(split.train["item"]) - set(split.valid["item"])
    seen = {t for known, targets in valid for t in (*known, *targets)}
    assert not set(titles.reindex(list(test_only))) & seen


def test_held_out_users_validate_on_their_context():
    import pandas as pd

    titles = pd.Series({1: "a", 2: "b", 3: "c", 4: "d", 5: "e"})
    frame = lambda rows: pd.DataFrame(rows, columns=["user", "item", "timestamp"])  # noqa: E731
    train = frame([(10, 1, 1), (10, 2, 2)])
    valid = frame([(10, 3, 3), (20, 5, 9)])
    context = frame([(20, 4, 8), (20, 2, 7)])
    assert validation_sequences(train, valid, titles, context) == [(["a", "b"], ["c"]), (["b", "d"], ["e"])]
    assert validation_sequences(train, valid, titles) == [(["a", "b"], ["c"]), ([], ["e"])]


def test_method_records_the_selection_and_convergence_reads_it(tiny_dataset, tiny_decoder, tmp_path):  # noqa: F811
    from bench.report.convergence import training_components

    tiny = {"max_steps": 3, "batch_size": 4, "grad_accum": 1, "warmup_steps": 0, "max_length": 64,
            "progress": False}
    call = _fit_call(tiny_dataset, "temporal_loo", tmp_path)
    method = METHODS.create("llm2rec-csft", {"base_model": str(tiny_decoder),
                                             "csft": {**tiny, "evaluations": 2, "valid_examples": 8}})
    call.run(method)
    info = call.extra["llm2rec"]
    outputs = info["stage_outputs"]
    selection = outputs["csft"]["selection"]
    assert [c["step"] for c in selection["curve"]] == [2, 3] and selection["n_examples"] == 8
    assert not {"key_parts", "step_tokens", "step_seconds"} & set(outputs["csft"])
    assert outputs["training_data"]["validation"]["stages"] == ["csft"]
    record = {"method_info": json.loads(json.dumps(call.extra)), "fit": {}, "spec": {"method": "llm2rec"}}
    parts = {c.name: c for c in training_components(record)}
    assert parts["LLM CSFT"].capped is (not selection["early_stopped"])


def test_convergence_judges_llm2rec_stages_that_selected():
    from bench.report.convergence import training_components

    def record(**stages):
        return {"method_info": {"llm2rec": {"stage_outputs": {
            stage: {"steps": 40, **({"selection": selection} if selection else {})}
            for stage, selection in stages.items()}}}, "fit": {}, "spec": {"method": "llm2rec"}}

    curve = [{"step": 20, "value": 2.0}, {"step": 40, "value": 1.5}]
    parts = {c.name: c for c in training_components(record(
        csft={"curve": curve, "best_step": 40, "early_stopped": False},  # best at the last: at the cap
        mntp={"curve": curve[:1], "best_step": 20, "early_stopped": False},  # one evaluation: not judged
        ic={"curve": curve, "best_step": 20, "early_stopped": True}))}  # best before the last: converged
    assert parts["LLM CSFT"].capped is True and parts["LLM MNTP"].capped is None
    assert parts["LLM IC"].capped is False and "step 20 of 40" in parts["LLM IC"].detail
    assert training_components(record(csft=None)) == []  # no evaluations: nothing to judge
    # the stages are LLM2Rec's to declare (its class hook): another family's record with the same keys has none
    assert [c.name for c in training_components({**record(csft={"curve": curve, "best_step": 40,
                                                               "early_stopped": False}), "spec": {"method": "random"}})] == []
