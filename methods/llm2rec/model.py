"""LLM2Rec (paper 003) model helpers: the bidirectional (non-causal) forward pass, pooling, and
`LLMItemEncoder`, the item-title encoder over a (trained or raw) decoder LLM (loaded by `methods.llm.load`).

Bidirectional attention with transformers (checked on 5.23, Llama and Qwen2): the decoder's mask
preparation (`masking_utils.create_causal_mask`) rebuilds a *causal* mask from a 2-D padding mask, and
with the eager kernel a causal triangle is applied even when every attention module has `is_causal=False`.
A 4-D mask, however, is passed through unchanged and, being not None, also switches SDPA's own
`is_causal` off. So `bidirectional_forward` always passes a 4-D additive float mask
[batch, 1, q, k] (0 where the key is a real token, `finfo(dtype).min` where it is padding; no triangle)
and, belt and braces, sets `is_causal=False` on every attention module for the duration of the call.
Models are loaded with `attn_implementation` "sdpa" or "eager" (flash-attention kernels ignore float
masks). `tests/test_llm2rec_stages.py` proves the first position's output depends on the last token.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.encoders import TransformersEncoder
from bench.errors import BenchError, UnknownChoiceError
from methods.llm.load import ATTN_IMPLEMENTATIONS, load_model, load_tokenizer

ENCODER_MODES = {
    "causal_last": "causal attention, hidden state of the last token (EOS appended): the raw 'causal' row",
    "bidirectional_mean": "no causal mask, mean of the hidden states over the title's tokens",
}


def decoder_of(model):
    """The bare decoder stack (LlamaModel / Qwen2Model) of a *ForCausalLM (or a PEFT wrapper of one)."""
    if getattr(model, "get_output_embeddings", None) is not None and model.get_output_embeddings() is not None:
        return model.get_decoder()
    return model


def compute_dtype(model, device_type: str):
    """The dtype attention scores are computed in: autocast's dtype when autocast is on, else the weights'."""
    import torch

    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return next(model.parameters()).dtype


def bidirectional_mask(attention_mask, dtype):
    """4-D additive mask [batch, 1, q, k] from a 2-D 0/1 padding mask: 0 = visible key, dtype-min = padding.

    No causal triangle: every query position sees every real token of its sequence (padded query rows see
    the real tokens too, so no row is fully masked unless the whole sequence is padding).
    """
    import torch

    keys = attention_mask.bool()[:, None, None, :]  # [b, 1, 1, k]
    length = attention_mask.shape[1]
    mask = torch.zeros((attention_mask.shape[0], 1, length, length), dtype=dtype, device=attention_mask.device)
    return mask.masked_fill(~keys, torch.finfo(dtype).min)


@contextlib.contextmanager
def non_causal(model):
    """Temporarily set `is_causal=False` on every module that has the flag (attention layers)."""
    saved = [(m, m.is_causal) for m in model.modules() if isinstance(getattr(m, "is_causal", None), bool)]
    try:
        for module, _ in saved:
            module.is_causal = False
        yield model
    finally:
        for module, flag in saved:
            module.is_causal = flag


def bidirectional_forward(model, input_ids, attention_mask):
    """Last hidden states [batch, length, hidden] of the decoder run without its causal mask.

    `model` is a *ForCausalLM, its bare decoder, or a PEFT wrapper of either; `attention_mask` is the
    2-D 0/1 padding mask (right padding). Gradients flow as usual.
    """
    decoder = decoder_of(model)
    mask = bidirectional_mask(attention_mask, compute_dtype(decoder, input_ids.device.type))
    with non_causal(decoder):
        out = decoder(input_ids=input_ids, attention_mask=mask, use_cache=False)
    return out.last_hidden_state


def causal_forward(model, input_ids, attention_mask):
    """Last hidden states of the decoder with its usual causal mask (2-D padding mask, right padding)."""
    out = decoder_of(model)(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    return out.last_hidden_state


def mean_pool(hidden, attention_mask):
    """Mean of `hidden` over non-pad positions ([b, d]); padded values never enter (not even NaN*0)."""
    import torch

    keep = attention_mask.bool().unsqueeze(-1)
    total = torch.where(keep, hidden, torch.zeros((), dtype=hidden.dtype, device=hidden.device)).sum(1)
    return total / keep.sum(1).clamp(min=1).to(hidden.dtype)


def last_token_pool(hidden, attention_mask):
    """Hidden state at each row's last non-pad position (right padding)."""
    import torch

    last = (attention_mask.sum(1) - 1).clamp(min=0)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def save_model_atomic(model, tokenizer, out_dir: Path | str) -> Path:
    """save_pretrained `model` + `tokenizer` into a sibling temp folder, then rename it to `out_dir`.

    Refuses to overwrite a non-empty `out_dir`.
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        if not out_dir.is_dir() or any(out_dir.iterdir()):
            raise BenchError(f"output folder {out_dir} already exists and is not empty")
        out_dir.rmdir()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.chmod(0o755)
        os.rename(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


class LLMItemEncoder(TransformersEncoder):
    """Item titles -> vectors from a decoder LLM folder (raw, or any LLM2Rec stage's output).

    mode "causal_last": causal attention, EOS appended, the last token's state (the paper's "Causal" row);
    mode "bidirectional_mean": no causal mask, mean over the title's tokens (the "Bidirectional" row and
    every trained stage). Titles are truncated to `max_length` tokens (EOS included), sorted by length and
    right-padded to each batch's longest, so a title's vector does not depend on its batch.
    """

    def __init__(self, path: Path | str, device: str = "cpu", mode: str = "bidirectional_mean",
                 max_length: int = 64, normalize: bool = False, attn_implementation: str = "sdpa", **kwargs):
        if mode not in ENCODER_MODES:
            raise UnknownChoiceError("LLM encoder mode", mode, ENCODER_MODES)
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
            raise BenchError(f"LLM encoder: max_length must be an integer >= 2, got {max_length!r}")
        if attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise UnknownChoiceError("attn_implementation", attn_implementation, ATTN_IMPLEMENTATIONS)
        super().__init__(path, device, **kwargs)
        self.mode = mode
        self.max_length = max_length
        self.normalize = normalize
        self.attn_implementation = attn_implementation

    def _load(self) -> None:
        tokenizer = load_tokenizer(self.path)
        model = load_model(self.path, self.device, self.attn_implementation, head=False)
        self._tokenizer, self._model = tokenizer, model.eval()

    def settings(self) -> dict[str, Any]:
        return {"mode": self.mode, "max_length": self.max_length, "normalize": self.normalize}

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """Token ids per text as the encoder feeds them (EOS appended in causal_last mode)."""
        if self.mode == "causal_last":
            eos = self.tokenizer.eos_token_id
            ids = self.tokenizer(texts, truncation=True, max_length=self.max_length - 1)["input_ids"]
            return [x + [eos] for x in ids]
        return self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]

    def _encode(self, texts: list[str], batch_size: int, progress: bool) -> np.ndarray:
        import torch
        from tqdm.auto import tqdm

        ids = self.token_ids(texts)
        order = np.argsort([-len(x) for x in ids], kind="stable")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        starts = range(0, len(texts), batch_size)
        with torch.inference_mode():
            for start in tqdm(starts, desc=f"encode {self.name} ({self.mode})", unit="batch",
                              disable=not progress):
                rows = [int(i) for i in order[start:start + batch_size] if ids[i]]
                if not rows:  # only empty texts left (sorted longest first): zero vectors
                    continue
                batch = self.tokenizer.pad({"input_ids": [ids[i] for i in rows]}, return_tensors="pt")
                input_ids = batch["input_ids"].to(self.device)
                mask = batch["attention_mask"].to(self.device)
                if self.mode == "causal_last":
                    pooled = last_token_pool(causal_forward(self.model, input_ids, mask), mask)
                else:
                    pooled = mean_pool(bidirectional_forward(self.model, input_ids, mask), mask)
                if self.normalize:
                    pooled = torch.nn.functional.normalize(pooled, dim=-1)
                out[rows] = pooled.float().cpu().numpy()
        return out
