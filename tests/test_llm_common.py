"""methods/llm: the one loader, the one LoRA helper, the one training loop (on accelerate) and the one chat
generator, on a tiny random Llama saved to a temp folder and a toy regression problem (nothing downloaded)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("accelerate")

from bench.errors import BenchError  # noqa: E402
from methods.llm.generate import ChatGenerator, Sampling  # noqa: E402
from methods.llm.load import load_model, load_tokenizer  # noqa: E402
from methods.llm.lora import (  # noqa: E402
    LoRASettings,
    add_lora,
    load_adapter,
    lora_config,
    lora_digest,
    lora_parameters,
    save_adapter,
)
from methods.llm.train import epoch_batches, shuffled_batches, train_loop  # noqa: E402
from tests.test_llm2rec_stages import make_model  # noqa: E402

CHAT = ("{% for m in messages %}{{ m['content'] }} , {% endfor %}{% if add_generation_prompt %}the {% endif %}")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random Llama (hidden 32, 2 layers, 64-word vocabulary) whose tokenizer has a chat template."""
    folder = make_model(tmp_path_factory.mktemp("llm"))
    tokenizer = load_tokenizer(folder)
    tokenizer.chat_template = CHAT
    tokenizer.save_pretrained(folder)
    return folder


# ---------------------------------------------------------------- loading


def test_loader_loads_the_saved_model(tiny):
    from safetensors.torch import load_file

    model = load_model(tiny, "cpu", "eager", use_cache=False)
    assert type(model).__name__ == "LlamaForCausalLM" and not model.training
    assert model.config.use_cache is False and model.config._attn_implementation == "eager"
    saved = load_file(str(tiny / "model.safetensors"))
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.items()) and len(saved) == 21
    assert next(model.parameters()).dtype == torch.float32
    bare = load_model(tiny, head=False)
    assert type(bare).__name__ == "LlamaModel" and bare.config.use_cache is True
    assert torch.equal(bare.embed_tokens.weight, saved["model.embed_tokens.weight"])
    with pytest.raises(BenchError, match="valid choices"):
        load_model(tiny, attn_implementation="flash_attention_2")


def test_loaded_models_never_fetch_hub_kernels(tiny, monkeypatch):
    """transformers >= 5 kernelizes a model with Hub kernels when `kernels` is installed; on CUDA its first
    .train() / .eval() then asked the Hub for kernels-community/rotary and failed offline (seen on an H200).
    Every loader turns that off, so a mode switch never reaches kernelize."""
    from transformers import PreTrainedModel

    if not hasattr(PreTrainedModel, "set_use_kernels"):
        pytest.skip("this transformers has no Hub-kernel support")
    calls = []
    monkeypatch.setattr(PreTrainedModel, "set_use_kernels", lambda self, *a, **k: calls.append(a), raising=True)
    for head in (True, False):
        model = load_model(tiny, head=head)
        assert model.use_kernels is False
        model.train()
        model.eval()
    assert not [a for a in calls if a and a[0]], f"kernelization was asked for: {calls}"


def test_tokenizer_padding_and_checks(tiny, tmp_path):
    right, left = load_tokenizer(tiny), load_tokenizer(tiny, padding_side="left", require_chat_template=True)
    assert right.padding_side == "right" and left.padding_side == "left"
    assert right.pad_token_id == 1 and right.eos_token_id == 2
    assert right.pad({"input_ids": [[10, 11, 12], [13]]})["input_ids"][1] == [13, 1, 1]
    assert left.pad({"input_ids": [[10, 11, 12], [13]]})["input_ids"][1] == [1, 1, 13]
    plain = make_model(tmp_path)  # the same tokenizer without a chat template
    with pytest.raises(BenchError, match="no chat template"):
        load_tokenizer(plain, require_chat_template=True)


# ---------------------------------------------------------------- LoRA


def _adapter(tiny, seed, **over):
    model = load_model(tiny)
    wrapper = add_lora(model, lora_config(LoRASettings(r=4), **over), seed)
    return model, wrapper


def test_lora_init_depends_on_the_seed_alone(tiny):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a, _ = _adapter(tiny, 7)
    assert torch.equal(torch.get_rng_state(), state)  # the global random state is neither read nor advanced
    torch.manual_seed(999)
    b, _ = _adapter(tiny, 7)
    c, _ = _adapter(tiny, 8)
    names = [n for n, _ in a.named_parameters() if "lora_" in n]
    # 2 layers x (q_proj, v_proj) x (A: 4 x 32, B: 32 x 4)
    assert len(names) == 8 and sum(p.numel() for p in lora_parameters(a)) == 1024
    pa, pb, pc = (dict(m.named_parameters()) for m in (a, b, c))
    for name in names:
        assert torch.equal(pa[name], pb[name])
        if "lora_A" in name:
            assert not torch.equal(pa[name], pc[name]) and float(pa[name].detach().abs().sum()) > 0
        else:  # peft starts B at zero, so a fresh adapter leaves the model's outputs unchanged
            assert float(pa[name].detach().abs().sum()) == 0.0
    assert lora_digest(a) == lora_digest(b) != lora_digest(c)
    assert all(not p.requires_grad for n, p in a.named_parameters() if "lora_" not in n)


def test_lora_without_seed_continues_the_global_state(tiny):
    torch.manual_seed(5)
    a, _ = _adapter(tiny, None)
    after = torch.get_rng_state()
    b, _ = _adapter(tiny, 5)  # seeded alike inside a fork: the same initial weights
    assert lora_digest(a) == lora_digest(b)
    torch.manual_seed(5)
    assert not torch.equal(after, torch.get_rng_state())  # the global state was advanced


def test_lora_config_and_adapter_round_trip(tiny, tmp_path):
    config = lora_config(r=2, alpha=4, dropout=0.0, target_modules=("q_proj", "k_proj"), task_type="CAUSAL_LM")
    assert (config.r, config.lora_alpha, config.lora_dropout, config.bias) == (2, 4, 0.0, "none")
    assert set(config.target_modules) == {"q_proj", "k_proj"} and config.task_type == "CAUSAL_LM"
    model, wrapper = _adapter(tiny, 1)
    with torch.no_grad():
        for p in lora_parameters(model):
            p.add_(0.5)
    save_adapter(wrapper, tmp_path / "adapter.pt")
    other, other_wrapper = _adapter(tiny, 2)
    assert lora_digest(other) != lora_digest(model)
    load_adapter(other_wrapper, tmp_path / "adapter.pt")
    assert lora_digest(other) == lora_digest(model)


# ---------------------------------------------------------------- training loop


def _regression(seed, steps=None, epochs=10, **options):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=generator)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 1)
    batches = epoch_batches(64, 16, epochs, np.random.default_rng(seed))

    def loss(idx):
        return torch.nn.functional.mse_loss(model(x[idx]), y[idx])

    result = train_loop(model.parameters(), lambda ps: torch.optim.SGD(ps, lr=0.1), batches, loss, steps=steps,
                        model=model, **options)
    return result, model


def test_training_loop_reduces_the_loss_and_repeats_exactly():
    result, model = _regression(0)
    assert result.steps == 40 and len(result.step_seconds) == 40 and result.seconds > 0
    assert result.losses[-1] < 0.01 * result.losses[0] and result.losses[0] > 1.0
    np.testing.assert_allclose(model.weight.detach().numpy(), [[1.0, -2.0, 0.5]], atol=0.05)
    assert not model.training  # eval mode at the end
    again, same = _regression(0)
    assert again.losses == result.losses and torch.equal(same.weight, model.weight)
    other, _ = _regression(1)
    assert other.losses != result.losses


def test_training_loop_equals_a_plain_torch_loop():
    """One CPU process: accelerate changes nothing (same losses and weights, bit for bit)."""
    result, model = _regression(0, max_grad_norm=0.5, grad_accum=2)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=generator)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3
    torch.manual_seed(0)
    plain = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(plain.parameters(), lr=0.1)
    batches = list(epoch_batches(64, 16, 10, np.random.default_rng(0)))
    losses = []
    for step in range(0, len(batches), 2):
        total = 0.0
        for idx in batches[step:step + 2]:
            loss = torch.nn.functional.mse_loss(plain(x[idx]), y[idx])
            (loss / 2).backward()
            total += float(loss) / 2
        torch.nn.utils.clip_grad_norm_(plain.parameters(), 0.5)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(total)
    assert result.losses == losses and len(losses) == 20
    assert torch.equal(plain.weight, model.weight) and torch.equal(plain.bias, model.bias)


def test_evaluation_callback_every_n_steps():
    calls = []

    def evaluate(step):
        calls.append(step)
        return step * 10

    result, _ = _regression(0, steps=10, eval_every=3, evaluate=evaluate)
    assert calls == [3, 6, 9] and result.evaluations == [(3, 30), (6, 60), (9, 90)] and result.steps == 10


def test_training_loop_errors():
    with pytest.raises(BenchError, match="the batches ran out at step 41"):
        _regression(0, steps=41)
    model = torch.nn.Linear(1, 1)
    with pytest.raises(BenchError, match=r"toy: loss is nan at step 0; lower lr"):
        train_loop(model.parameters(), lambda ps: torch.optim.SGD(ps, lr=0.1), iter([0]),
                   lambda _: model.weight.sum() * float("nan"), check_finite=True, hint="lower lr", desc="toy")


def test_batch_orders():
    a, b = shuffled_batches(10, 4, 3), shuffled_batches(10, 4, 3)
    first = [next(a) for _ in range(4)]
    assert first == [next(b) for _ in range(4)]
    assert all(len(batch) == 4 and len(set(batch)) == 4 for batch in first)  # ragged tail dropped
    assert len(set(first[0]) | set(first[1])) == 8 and first[0] != [0, 1, 2, 3]  # one shuffled epoch
    assert sorted(next(shuffled_batches(3, 4, 0))) == [0, 1, 2]  # fewer examples than a batch: all of them
    epochs = list(epoch_batches(10, 4, 2, np.random.default_rng(0)))
    assert [len(b) for b in epochs] == [4, 4, 2, 4, 4, 2]
    assert sorted(np.concatenate(epochs[:3]).tolist()) == list(range(10))


# ---------------------------------------------------------------- generation


def test_greedy_generation_is_deterministic(tiny):
    generator = ChatGenerator(tiny)
    greedy = Sampling(max_new_tokens=5, repetition_penalty=1.0)
    prompts = ["star wars", "the matrix , heat"]
    first = generator.generate("a movie", prompts, [1, 2], greedy)
    assert first == generator.generate("a movie", prompts, [3, 4], greedy)  # seeds do not matter greedily
    assert first[0] == generator.generate("a movie", prompts[:1], [1], greedy)[0]  # nor does the batch
    assert all(0 < n <= 5 and text for text, n in first)
    assert generator.last_prompt_tokens == 7  # the last batch: "a movie , star wars , the"
    assert generator.chat_texts("sys", ["hello"]) == ["sys , hello , the "]
    sampled = Sampling(max_new_tokens=5, temperature=1.0)
    drawn = generator.generate("a movie", prompts, [1, 2], sampled)
    assert drawn == generator.generate("a movie", prompts, [1, 2], sampled)
    many = [generator.generate("a movie", prompts[:1], [s], sampled)[0][0] for s in range(6)]
    assert len(set(many)) > 1  # seeds matter when sampling


def test_schedule_factor_warms_up_then_decays_as_hf_trainer():
    from methods.llm.train import schedule_factor, scheduler_factory

    assert [schedule_factor(s, 4, 10, "linear") for s in range(4)] == [0.2, 0.4, 0.6, 0.8]
    assert [round(schedule_factor(s, 4, 10, "linear"), 4) for s in (4, 7, 10)] == [1.0, 0.5, 0.0]
    assert schedule_factor(7, 4, 10, "cosine") == pytest.approx(0.5)
    assert schedule_factor(10, 4, 10, "cosine") == pytest.approx(0.0)
    assert schedule_factor(9, 4, 10, "constant") == 1.0
    assert scheduler_factory(0, 10, "constant") is None  # the plain optimizer: old behaviour, no scheduler
    with pytest.raises(BenchError, match="learning-rate schedule"):
        scheduler_factory(2, 10, "step")


def test_train_loop_stops_when_validation_says_so():
    import torch

    from methods.llm.train import epoch_batches, scheduler_factory, train_loop

    weight = torch.nn.Parameter(torch.zeros(1))
    evaluated, rates = [], []

    def evaluate(step):
        evaluated.append(step)
        rates.append(optimizer_rate[0].param_groups[0]["lr"])

    optimizer_rate = []

    def make(params):
        optimizer_rate.append(torch.optim.SGD(params, lr=1.0))
        return optimizer_rate[0]

    result = train_loop([weight], make, epoch_batches(40, 1, 1, np.random.default_rng(0)),
                        lambda batch: (weight - 1.0).pow(2).sum(), eval_every=5, evaluate=evaluate,
                        should_stop=lambda: len(evaluated) >= 3, make_scheduler=scheduler_factory(5, 40, "linear"))
    assert evaluated == [5, 10, 15] and result.steps == 15 and result.stopped_early
    assert rates[0] == pytest.approx(1.0) and rates[2] < rates[1] < rates[0]  # warmed up, then decaying
    full = train_loop([torch.nn.Parameter(torch.zeros(1))], lambda p: torch.optim.SGD(p, lr=0.1),
                      epoch_batches(12, 1, 1, np.random.default_rng(0)), lambda b: torch.zeros(1, requires_grad=True).sum())
    assert full.steps == 12 and not full.stopped_early


def test_evaluation_steps_spread_over_a_budget_and_warmup_from_a_ratio():
    from methods.llm.train import resolve_warmup, spread_steps

    assert spread_steps(6, 5) == [2, 3, 4, 5, 6] and spread_steps(32, 5) == [7, 13, 20, 26, 32]
    assert spread_steps(2, 5) == [1, 2] and spread_steps(10, 0) == [] and spread_steps(0, 5) == []
    assert resolve_warmup(32, 0, 0.1) == 4 and resolve_warmup(2, 0, 0.1) == 1 and resolve_warmup(32, 0, 0.0) == 0
    assert resolve_warmup(32, 3, 0.5) == 3  # steps win over the ratio (HF Trainer)
    calls = []
    result, _ = _regression(0, steps=10, eval_every=0, eval_steps={4, 7, 10}, evaluate=calls.append)
    assert calls == [4, 7, 10] and result.steps == 10
