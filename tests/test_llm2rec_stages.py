"""LLM2Rec stages on a tiny Llama (and Qwen2) built in a fixture: CSFT labels, dynamic padding, the
bidirectional mask, MNTP masking, SimCSE, the stage cache and the item encoder. Nothing is downloaded."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from bench.errors import BenchError  # noqa: E402
from methods.llm.load import load_model, load_tokenizer  # noqa: E402
from methods.llm2rec import model as lm  # noqa: E402
from methods.llm2rec import stages as st  # noqa: E402

WORDS = ("the a of and star wars matrix toy story alien heat up down red blue movie game night day "
         "king queen lost city space odyssey dark knight return jedi empire strikes back").split()
SPECIALS = ["<unk>", "<pad>", "</s>", "<s>"]
TITLES = ["star wars", "the matrix", "toy story", "alien", "heat", "up", "the dark knight", "lost city",
          "space odyssey", "return of the jedi", "the empire strikes back", "red king", "blue queen",
          "night and day", "the lost king"]
FAST = {"max_steps": 2, "batch_size": 4, "grad_accum": 1, "warmup_steps": 0, "progress": False,
        "device": "cpu", "max_length": 64}


def make_tokenizer():
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate([*SPECIALS, "_", ",", "\n", *WORDS])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(" ", behavior="removed"),
        pre_tokenizers.Split(Regex(r"[,\n]"), behavior="isolated"),
    ])
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", pad_token="<pad>",
                                   eos_token="</s>", bos_token="<s>")


def make_model(tmp_path, arch: str = "llama"):
    tokenizer = make_tokenizer()
    common = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=2, intermediate_size=64, max_position_embeddings=128,
                  pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                  bos_token_id=tokenizer.bos_token_id, tie_word_embeddings=False)
    if arch == "llama":
        config = transformers.LlamaConfig(**common)
        model_cls = transformers.LlamaForCausalLM
    else:
        config = transformers.Qwen2Config(**common)
        model_cls = transformers.Qwen2ForCausalLM
    torch.manual_seed(0)
    model = model_cls(config)
    folder = tmp_path / f"tiny-{arch}"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("llm2rec"))


def sequences():
    rng = np.random.default_rng(0)
    return [[TITLES[i] for i in rng.choice(len(TITLES), size=6, replace=False)] for _ in range(8)]


def weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


# ---------------------------------------------------------------- CSFT data


def test_csft_examples_history_window_and_target():
    examples = st.build_csft_examples([["a", "b", "c", "d"], ["x"], ["p", "q"]], max_history=2)
    assert examples == [("a", "b\n"), ("a, b", "c\n"), ("b, c", "d\n"), ("p", "q\n")]


def test_csft_labels_cover_target_and_eos_only(tiny_dir):
    tokenizer = load_tokenizer(tiny_dir)
    examples = [("star wars, the matrix", "toy story\n"), ("alien", "heat\n")]
    batch = st.csft_collate(tokenizer, examples, max_length=64)
    for row, (source, target) in enumerate(examples):
        n_in = len(tokenizer(source)["input_ids"])
        target_ids = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        labels = batch["labels"][row].tolist()
        assert labels[:n_in] == [-100] * n_in
        assert labels[n_in:n_in + len(target_ids)] == target_ids
        assert labels[n_in + len(target_ids):] == [-100] * (len(labels) - n_in - len(target_ids))
        assert batch["input_ids"][row, n_in:n_in + len(target_ids)].tolist() == target_ids
    assert target_ids[-2] == tokenizer.convert_tokens_to_ids("\n")  # newline, then EOS


def test_csft_dynamic_padding_and_truncation(tiny_dir):
    tokenizer = load_tokenizer(tiny_dir)
    examples = [("alien", "up\n"), ("star wars, the matrix, toy story", "heat\n")]
    batch = st.csft_collate(tokenizer, examples, max_length=64)
    lengths = batch["attention_mask"].sum(1).tolist()
    assert batch["input_ids"].shape[1] == max(lengths) == 11  # 8 input + heat \n EOS, not 64
    assert lengths[0] == 4
    assert (batch["input_ids"][0, 4:] == tokenizer.pad_token_id).all()
    short = st.csft_collate(tokenizer, examples, max_length=5)  # input cut from the left, target kept
    assert short["input_ids"].shape[1] == 5
    assert short["labels"][1].tolist()[-3:] == tokenizer("heat\n", add_special_tokens=False)["input_ids"] + [2]
    assert short["input_ids"][1, :2].tolist() == tokenizer("toy story")["input_ids"]


# ---------------------------------------------------------------- bidirectional attention


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_bidirectional_first_position_sees_last_token(tmp_path, arch, attn):
    folder = make_model(tmp_path, arch)
    model = load_model(folder, "cpu", attn, use_cache=False).eval()
    # rows 0/1 differ only in their last real token; row 2 is padded (padding must change nothing)
    ids = torch.tensor([[10, 11, 12, 13, 14], [10, 11, 12, 13, 15], [10, 11, 12, 1, 1]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    with torch.no_grad():
        bi = lm.bidirectional_forward(model, ids, mask)
        causal = lm.causal_forward(model, ids, mask)
        alone = lm.bidirectional_forward(model, ids[2:, :3], mask[2:, :3])
    assert (bi[0, 0] - bi[1, 0]).abs().max() > 1e-4  # first position depends on the last token
    assert (bi[0, :4] - bi[1, :4]).abs().amax(-1).min() > 1e-4  # ... and so does every position
    torch.testing.assert_close(causal[0, :4], causal[1, :4])  # causal: earlier positions cannot see it
    assert (causal[0, 4] - causal[1, 4]).abs().max() > 1e-4
    torch.testing.assert_close(bi[2, :3], alone[0], rtol=1e-5, atol=1e-5)  # pad keys are invisible
    assert all(m.is_causal for m in model.modules() if hasattr(m, "is_causal"))  # flags restored


def test_bidirectional_mask_values():
    mask = lm.bidirectional_mask(torch.tensor([[1, 1, 0]]), torch.float32)
    assert mask.shape == (1, 1, 3, 3)
    low = torch.finfo(torch.float32).min
    assert mask[0, 0].tolist() == [[0.0, 0.0, low]] * 3  # no triangle, padded key hidden from every query


def test_bidirectional_forward_accepts_bare_decoder(tiny_dir):
    model = load_model(tiny_dir, use_cache=False).eval()
    ids, mask = torch.tensor([[10, 11, 12]]), torch.ones(1, 3, dtype=torch.long)
    with torch.no_grad():
        torch.testing.assert_close(lm.bidirectional_forward(model, ids, mask),
                                   lm.bidirectional_forward(model.model, ids, mask))


# ---------------------------------------------------------------- MNTP


def test_mntp_masking_rates():
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 60, (400, 100))
    attention = torch.ones_like(ids)
    attention[:, 80:] = 0  # padding is never masked
    ids[:, 80:] = 1
    corrupted, labels = st.mntp_mask(ids, attention, mask_id=4, vocab_size=64, probability=0.2,
                                     generator=generator, special_ids=[1, 2])
    selected = labels != -100
    candidates = attention.bool().clone()
    candidates[:, 0] = False
    assert not selected[~candidates].any()
    assert torch.equal(labels[selected], ids[selected])
    rate = selected.sum().item() / candidates.sum().item()
    assert abs(rate - 0.2) < 0.01
    n = selected.sum().item()
    as_mask = (corrupted[selected] == 4).sum().item() / n
    unchanged = (corrupted[selected] == ids[selected]).sum().item() / n
    assert abs(as_mask - 0.8) < 0.02
    assert abs(unchanged - 0.1) < 0.02  # 10% kept (+ random draws that hit the same id, ~0.2%)
    assert abs(1 - as_mask - unchanged - 0.1) < 0.02  # 10% random
    assert torch.equal(corrupted[~selected], ids[~selected])


def test_shifted_loss_predicts_token_i_from_position_i_minus_1():
    length = 6
    hidden = torch.eye(length).unsqueeze(0)  # position j's state is one-hot(j)
    head = torch.nn.Linear(length, length, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.eye(length) * 50)  # the state at position j predicts token j
    labels = torch.full((1, length), -100)
    labels[0, 3], labels[0, 5] = 2, 4  # token at i is i-1: right only if read at position i-1
    assert st.shifted_token_loss(hidden, labels, head).item() < 1e-6
    labels[0, 3], labels[0, 5] = 3, 5  # read at i itself: wrong under the shift
    assert st.shifted_token_loss(hidden, labels, head).item() > 10


def test_mask_token_must_be_in_vocabulary(tiny_dir):
    tokenizer = load_tokenizer(tiny_dir)
    assert st.mask_token_id(tokenizer, "_") == 4
    with pytest.raises(BenchError, match="not a single token"):
        st.mask_token_id(tokenizer, "<mask>")


# ---------------------------------------------------------------- training stages


def test_csft_trains_and_saves_plain_folder(tiny_dir, tmp_path):
    examples = st.build_csft_examples(sequences())
    stats = st.csft(tiny_dir, examples, tmp_path / "csft", {**FAST, "max_steps": 12, "lr": 3e-3})
    assert stats["steps"] == 12 and len(stats["losses"]) == 12
    assert stats["tokens"] == sum(stats["step_tokens"]) > 0
    assert np.mean(stats["losses"][-3:]) < np.mean(stats["losses"][:3])
    before, after = weights(tiny_dir), weights(tmp_path / "csft")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert (tmp_path / "csft" / "tokenizer.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # temp folder renamed away
    with pytest.raises(BenchError, match="not empty"):
        st.csft(tiny_dir, examples, tmp_path / "csft", FAST)


def test_csft_lora_is_merged(tiny_dir, tmp_path):
    pytest.importorskip("peft")
    examples = st.build_csft_examples(sequences())
    st.csft(tiny_dir, examples, tmp_path / "lora", {**FAST, "lora": True, "lr": 1e-2})
    before, after = weights(tiny_dir), weights(tmp_path / "lora")
    assert set(before) == set(after)  # plain weights, no adapter tensors
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("q_proj" in k or "v_proj" in k for k in changed)


def test_mntp_trains(tiny_dir, tmp_path):
    stats = st.mntp(tiny_dir, TITLES, tmp_path / "mntp",
                   {**FAST, "max_steps": 10, "batch_size": 16, "lr": 3e-3, "mask_probability": 0.5})
    assert stats["mask_token"] == "_" and stats["mask_token_id"] == 4
    assert np.mean(stats["losses"][-3:]) < np.mean(stats["losses"][:3])
    before, after = weights(tiny_dir), weights(tmp_path / "mntp")
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_item_contrastive_trains_with_dropout(tiny_dir, tmp_path):
    stats = st.item_contrastive(tiny_dir, TITLES + TITLES[:3], tmp_path / "ic",
                                {**FAST, "max_steps": 10, "batch_size": 8, "lr": 3e-3})
    assert stats["titles"] == len(TITLES)  # duplicates dropped
    assert np.mean(stats["losses"][-3:]) < np.mean(stats["losses"][:3])
    saved = json.loads((tmp_path / "ic" / "config.json").read_text())
    assert saved["attention_dropout"] == 0.0  # training dropout not written into the model


def test_set_dropout_makes_two_views_differ(tiny_dir):
    model = load_model(tiny_dir, "cpu", "eager", use_cache=False)
    st.set_dropout(model, 0.2)
    model.train()
    ids, mask = torch.tensor([[10, 11, 12, 13]]), torch.ones(1, 4, dtype=torch.long)
    a, b = (lm.mean_pool(lm.bidirectional_forward(model, ids, mask), mask) for _ in range(2))
    assert (a - b).abs().max() > 1e-5
    model.eval()
    a, b = (lm.mean_pool(lm.bidirectional_forward(model, ids, mask), mask) for _ in range(2))
    torch.testing.assert_close(a, b)


def test_info_nce_prefers_matching_rows():
    z = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    assert st.info_nce(z, z, 0.1) < st.info_nce(z, z.roll(1, 0), 0.1)


# ---------------------------------------------------------------- settings, cache, pipeline


def test_settings_errors_list_valid_keys():
    with pytest.raises(BenchError, match="unknown setting.*bogus.*valid settings:.*max_steps"):
        st.resolve_settings("csft", {"bogus": 1})
    with pytest.raises(BenchError, match="max_steps"):
        st.resolve_settings("mntp", {"max_steps": 0})
    with pytest.raises(BenchError, match="valid choices: csft, ic, mntp"):
        st.resolve_settings("sft", {})
    with pytest.raises(BenchError, match="valid sections"):
        st.pipeline("x", [], [], {"csf": {}}, "y")
    with pytest.raises(BenchError, match="order"):
        st.pipeline("x", [], [], {}, "y", stages=("ic", "csft"))
    assert st.resolve_settings("ic", {}).temperature == 0.1


def test_run_stage_caches_and_keys_on_settings(tiny_dir, tmp_path):
    calls = []

    def fn(out_dir):
        calls.append(out_dir)
        out_dir.mkdir()
        (out_dir / "weights.txt").write_text("w")
        return {"steps": 1, "losses": [1.0]}

    cache = tmp_path / "cache"
    first = st.run_stage("csft", tiny_dir, "data1", {"max_steps": 5}, cache, fn)
    again = st.run_stage("csft", tiny_dir, "data1", {"max_steps": 5, "device": "cpu"}, cache, fn)
    assert first == again and len(calls) == 1
    assert first.parent == cache / "llm2rec" and first.name.startswith("csft-") and len(first.name) == 21
    record = json.loads((first / "stage.json").read_text())
    assert record["settings"]["max_steps"] == 5 and record["losses"] == [1.0] and record["data_hash"] == "data1"
    other = st.run_stage("csft", tiny_dir, "data1", {"max_steps": 6}, cache, fn)
    other_data = st.run_stage("csft", tiny_dir, "data2", {"max_steps": 5}, cache, fn)
    assert len({first, other, other_data}) == 3 and len(calls) == 3
    assert not [p for p in (cache / "llm2rec").iterdir() if p.name.startswith(".")]


def test_run_stage_trains_once_when_two_workers_need_it(tiny_dir, tmp_path):
    """Parallel runs needing the same stage: one trains it, the other waits and reuses the folder."""
    import threading
    import time

    calls = []

    def fn(out_dir):
        calls.append(out_dir)
        time.sleep(0.5)
        out_dir.mkdir()
        return {"steps": 1}

    cache = tmp_path / "cache"
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        st.run_stage("csft", tiny_dir, "data1", {"max_steps": 5}, cache, fn))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len(results) == 2 and results[0] == results[1]


def test_pipeline_chains_and_reuses(tiny_dir, tmp_path):
    settings = {stage: dict(FAST) for stage in st.STAGES}
    cache = tmp_path / "cache"
    folders = st.pipeline(tiny_dir, sequences(), TITLES, settings, cache)
    assert list(folders) == ["csft", "mntp", "ic"]
    records = {stage: st.read_stage(folder) for stage, folder in folders.items()}
    assert records["mntp"]["base_dir"] == str(folders["csft"])
    assert records["ic"]["base_dir"] == str(folders["mntp"])
    assert all(r["steps"] == 2 and r["tokens"] > 0 and r["seconds"] > 0 for r in records.values())
    mtimes = {s: (f / "stage.json").stat().st_mtime_ns for s, f in folders.items()}
    assert st.pipeline(tiny_dir, sequences(), TITLES, settings, cache) == folders
    assert {s: (f / "stage.json").stat().st_mtime_ns for s, f in folders.items()} == mtimes
    # a changed IC setting reuses CSFT and MNTP
    changed = st.pipeline(tiny_dir, sequences(), TITLES, {**settings, "ic": {**FAST, "temperature": 0.2}}, cache)
    assert changed["csft"] == folders["csft"] and changed["mntp"] == folders["mntp"]
    assert changed["ic"] != folders["ic"]


# ---------------------------------------------------------------- encoder and throughput


def test_llm_item_encoder_modes(tiny_dir, tmp_path):
    titles = ["star wars", "the dark knight returns", "up", ""]
    causal = lm.LLMItemEncoder(tiny_dir, mode="causal_last", cache_dir=tmp_path)
    bi = lm.LLMItemEncoder(tiny_dir, mode="bidirectional_mean", cache_dir=tmp_path)
    a, b = causal.encode(titles, batch_size=2, progress=False), bi.encode(titles, progress=False)
    assert a.shape == b.shape == (4, 32) and a.dtype == b.dtype == np.float32
    assert not np.allclose(a[:3], b[:3], atol=1e-3)
    np.testing.assert_array_equal(b[3], 0)  # empty text: zero vector in mean mode
    assert causal.token_ids(["up"])[0][-1] == causal.tokenizer.eos_token_id
    np.testing.assert_allclose(bi.encode(titles[:1], progress=False)[0], b[0], rtol=1e-5, atol=1e-6)
    assert causal.fingerprint() != bi.fingerprint()
    assert bi.fingerprint() != lm.LLMItemEncoder(tiny_dir, max_length=32, cache_dir=tmp_path).fingerprint()
    with pytest.raises(BenchError, match="valid choices"):
        lm.LLMItemEncoder(tiny_dir, mode="mean")


def test_csft_throughput_reports_rates(tiny_dir):
    result = st.csft_throughput(tiny_dir, st.build_csft_examples(sequences()), steps=3, batch_size=4,
                                device="cpu")
    assert result["tokens"] > 0 and result["tokens_per_s"] > 0 and result["steps_timed"] == 2
    n_params = sum(p.numel() for p in load_model(tiny_dir, use_cache=False).parameters())
    assert result["n_params"] == n_params
    assert result["gflops_per_s"] == pytest.approx(6 * n_params * result["tokens_per_s"] / 1e9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_stages_on_cuda(tiny_dir, tmp_path):
    model = load_model(tiny_dir, "cuda", use_cache=False).eval()
    ids = torch.tensor([[10, 11, 12, 13], [10, 11, 12, 14]], device="cuda")
    mask = torch.ones_like(ids)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        hidden = lm.bidirectional_forward(model, ids, mask)
    assert torch.isfinite(hidden).all() and (hidden[0, 0] - hidden[1, 0]).abs().max() > 1e-3
    settings = {stage: {**FAST, "device": "auto"} for stage in st.STAGES}
    folders = st.pipeline(tiny_dir, sequences(), TITLES, settings, tmp_path / "cache")
    assert all(st.read_stage(f)["device"] == "cuda" for f in folders.values())
