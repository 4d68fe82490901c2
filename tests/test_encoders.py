"""Encoders and the item-embedding cache: tiny local models for the fast tests, the real assets (slow)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.encoders import DecoderMeanPoolEncoder, encode_items, get_encoder
from bench.errors import BenchError, UnknownChoiceError


@pytest.fixture(scope="module")
def tiny_decoder(tmp_path_factory):
    """A 2-layer Llama with a word-level tokenizer, saved as a plain transformers folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_llama")
    words = ["<pad>", "<unk>", "</s>", "toy", "story", "heat", "casino", "the", "a", "movie", "(1995)"]
    raw = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", unk_token="<unk>",
                                        eos_token="</s>")
    config = LlamaConfig(vocab_size=len(words), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, pad_token_id=0, eos_token_id=2)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_decoder_mean_pool_ignores_padding(tiny_decoder, tmp_path):
    encoder = DecoderMeanPoolEncoder(tiny_decoder, "cpu", tmp_path, batch_size=4)
    alone = encoder.encode(["toy story"], progress=False)
    batched = encoder.encode(["toy story", "the casino movie heat a"], progress=False)
    assert alone.shape == (1, 32) and encoder.dim == 32
    np.testing.assert_allclose(alone[0], batched[0], atol=1e-5)
    assert not np.allclose(batched[0], batched[1])


def test_item_cache_hit_encodes_nothing(tiny_decoder, tmp_path, monkeypatch):
    encoder = get_encoder("hf-path", {"path": str(tiny_decoder)}, "cpu", tmp_path)
    texts = pd.Series(["toy story", "heat", "casino"], index=["1", "2", "3"])
    first, info1 = encode_items(encoder, texts, "{title}", tmp_path, progress=False)
    calls = []
    monkeypatch.setattr(encoder, "encode", lambda *a, **k: calls.append(1))
    second, info2 = encode_items(encoder, texts, "{title}", tmp_path, progress=False)
    assert not info1["cache_hit"] and info2["cache_hit"] and calls == []
    np.testing.assert_array_equal(first, second)
    assert info2["first_encode_seconds"] == pytest.approx(info1["seconds"])
    # a different template or text is a different key
    monkeypatch.undo()
    _, info3 = encode_items(encoder, texts, "{title} ({year})", tmp_path, progress=False)
    _, info4 = encode_items(encoder, texts.replace("heat", "the heat"), "{title}", tmp_path, progress=False)
    assert len({info1["key"], info3["key"], info4["key"]}) == 3


def test_nan_embedding_names_encoder_and_item(tiny_decoder, tmp_path, monkeypatch):
    encoder = get_encoder("hf-path", {"path": str(tiny_decoder)}, "cpu", tmp_path)

    def broken(texts, **kwargs):
        out = np.zeros((len(texts), 32), dtype=np.float32)
        out[1, 3] = np.nan
        return out

    monkeypatch.setattr(encoder, "encode", broken)
    with pytest.raises(BenchError, match="encoder 'hf-path'.*item '2'"):
        encode_items(encoder, pd.Series(["a", "b"], index=["1", "2"]), "{title}", tmp_path, progress=False)
    assert not list((tmp_path / "embeddings").glob("*.npy"))


def test_bad_encoder_choices(tmp_path):
    with pytest.raises(UnknownChoiceError, match="valid choices: hf-path, minilm, mpnet"):
        get_encoder("bert", {}, "cpu", tmp_path)
    with pytest.raises(BenchError, match="needs a model folder"):
        get_encoder("st-path", {}, "cpu", tmp_path)
    with pytest.raises(BenchError, match="unknown encoder setting"):
        get_encoder("minilm", {"pooling": "max"}, "cpu", tmp_path)


@pytest.mark.slow
def test_minilm_real_model_semantics(tmp_path):
    encoder = get_encoder("minilm", {}, "cpu", tmp_path)
    vectors = encoder.encode(["Toy Story (1995)", "Toy Story 2 (1999)", "Schindler's List (1993)"], progress=False)
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2
