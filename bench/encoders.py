"""Text encoders behind one interface, and the on-disk item-embedding cache.

Encoders: all-MiniLM-L6-v2 (default, 384-d), all-mpnet-base-v2 (LLMInit's default, 768-d), a decoder
LLM's mean-pooled last hidden states (SmolLM2-135M), or any local sentence-transformers / transformers
folder. Item embeddings are cached keyed by (encoder file hash + settings, text template, item texts):
a second run encodes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench.errors import BenchError, UnknownChoiceError

ENCODER_NAMES = {
    "minilm": "all-MiniLM-L6-v2 sentence encoder, 384-d (default; fast)",
    "mpnet": "all-mpnet-base-v2 sentence encoder, 768-d (LLMInit's default)",
    "smollm2": "SmolLM2-135M-Instruct decoder, mean-pooled last hidden states, 576-d",
    "st-path": "any local sentence-transformers folder (setting: path)",
    "hf-path": "any local transformers model folder, mean-pooled last hidden states (setting: path)",
}
SETTINGS = {"path", "batch_size", "max_length", "normalize"}


class Encoder:
    """Base: `encode(texts) -> float32 [n, dim]`, `fingerprint()`, `parameter_count()`."""

    name: str = ""
    dim: int = 0

    def __init__(self, path: Path, device: str, cache_dir: Path | None, batch_size: int = 64):
        self.path, self.device, self.cache_dir, self.batch_size = Path(path), device, cache_dir, batch_size
        self._fingerprint: str | None = None

    def settings(self) -> dict:
        return {"class": type(self).__name__, "batch_size_independent": True}

    def fingerprint(self) -> str:
        """sha256 of the model files and the pooling settings."""
        if self._fingerprint is None:
            from bench.assets import files_fingerprint

            files = files_fingerprint(self.path, self.cache_dir)
            self._fingerprint = hashlib.sha256(
                (files + json.dumps(self.settings(), sort_keys=True)).encode()).hexdigest()
        return self._fingerprint

    def encode(self, texts: list[str], batch_size: int | None = None, progress: bool = True) -> np.ndarray:
        raise NotImplementedError

    def parameter_count(self) -> int:
        raise NotImplementedError


class SentenceTransformerEncoder(Encoder):
    """A sentence-transformers folder (MiniLM, MPNet, or the user's own)."""

    def __init__(self, path, device, cache_dir=None, batch_size=64, normalize=True, name="st-path"):
        super().__init__(path, device, cache_dir, batch_size)
        from sentence_transformers import SentenceTransformer

        if not (self.path / "modules.json").exists() and not (self.path / "config.json").exists():
            raise BenchError(f"encoder {name!r}: {self.path} is not a sentence-transformers folder")
        self.model = SentenceTransformer(str(self.path), device=device)
        self.name, self.normalize = name, normalize
        self.dim = int(self.model.get_sentence_embedding_dimension())

    def settings(self) -> dict:
        return {"class": "SentenceTransformerEncoder", "normalize": self.normalize}

    def encode(self, texts, batch_size=None, progress=True):
        out = self.model.encode(list(texts), batch_size=batch_size or self.batch_size, show_progress_bar=progress,
                                convert_to_numpy=True, normalize_embeddings=self.normalize)
        return np.asarray(out, dtype=np.float32)

    def parameter_count(self) -> int:
        return int(sum(p.numel() for p in self.model.parameters()))


class DecoderMeanPoolEncoder(Encoder):
    """A causal LM's last hidden states averaged over the non-padding tokens of each text."""

    def __init__(self, path, device, cache_dir=None, batch_size=16, max_length=64, name="hf-path"):
        super().__init__(path, device, cache_dir, batch_size)
        import torch
        from transformers import AutoModel, AutoTokenizer

        if not (self.path / "config.json").exists():
            raise BenchError(f"encoder {name!r}: {self.path} has no config.json (not a transformers folder)")
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "right"
        self.model = AutoModel.from_pretrained(self.path, dtype=torch.float32).to(device).eval()
        self.name, self.max_length = name, max_length
        self.dim = int(self.model.config.hidden_size)

    def settings(self) -> dict:
        return {"class": "DecoderMeanPoolEncoder", "pooling": "mean", "max_length": self.max_length}

    def encode(self, texts, batch_size=None, progress=True):
        import torch
        from tqdm.auto import tqdm

        texts, size = list(texts), batch_size or self.batch_size
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in tqdm(range(0, len(texts), size), desc=f"encode {self.name}", disable=not progress):
            batch = self.tokenizer(texts[start:start + size], padding="longest", truncation=True,
                                   max_length=self.max_length, return_tensors="pt").to(self.device)
            with torch.no_grad():
                hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out[start:start + size] = ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).float().cpu().numpy()
        return out

    def parameter_count(self) -> int:
        return int(sum(p.numel() for p in self.model.parameters()))


def get_encoder(name: str, settings: dict | None, device: str, cache_dir: Path) -> Encoder:
    """Build a named encoder; `settings` may set path, batch_size, max_length, normalize."""
    from bench import assets

    settings = dict(settings or {})
    if name not in ENCODER_NAMES:
        raise UnknownChoiceError("encoder", name, ENCODER_NAMES)
    unknown = set(settings) - SETTINGS
    if unknown:
        raise BenchError(f"unknown encoder setting(s) {', '.join(sorted(unknown))}; valid settings: "
                         f"{', '.join(sorted(SETTINGS))}")
    path = settings.get("path")
    if path is None:
        if name in ("st-path", "hf-path"):
            raise BenchError(f"encoder {name!r} needs a model folder: --set encoder.path=/path/to/model")
        path = {"minilm": lambda: assets.minilm_dir(), "mpnet": lambda: assets.mpnet_dir(cache_dir),
                "smollm2": lambda: assets.smollm2_dir(cache_dir)}[name]()
    if not Path(path).is_dir():
        raise BenchError(f"encoder {name!r}: model folder {path} does not exist")
    batch = int(settings.get("batch_size", 64 if name in ("minilm", "mpnet", "st-path") else 16))
    if name in ("smollm2", "hf-path"):
        return DecoderMeanPoolEncoder(path, device, cache_dir, batch, int(settings.get("max_length", 64)), name)
    return SentenceTransformerEncoder(path, device, cache_dir, batch, bool(settings.get("normalize", True)), name)


def _texts_hash(item_text: pd.Series) -> str:
    digest = hashlib.sha256()
    for item, text in item_text.items():
        digest.update(f"{item}\0{text}\n".encode())
    return digest.hexdigest()


def encode_items(encoder: Encoder, item_text: pd.Series, template: str, cache_dir: Path,
                 progress: bool = True) -> tuple[np.ndarray, dict]:
    """Embeddings of `item_text` (in its order), from `cache_dir/embeddings/<key>.npy` when present."""
    key = hashlib.sha256("\n".join([encoder.fingerprint(), template, _texts_hash(item_text)]).encode()).hexdigest()
    folder = Path(cache_dir) / "embeddings"
    path = folder / f"{key[:32]}.npy"
    info = {"key": key, "path": str(path), "encoder": encoder.name, "dim": int(encoder.dim)}
    start = time.perf_counter()
    meta_path = folder / f"{key[:32]}.json"
    if path.exists():
        matrix = np.load(path)
        first = json.loads(meta_path.read_text()).get("encode_seconds") if meta_path.exists() else None
        return matrix, {**info, "cache_hit": True, "seconds": time.perf_counter() - start,
                        "first_encode_seconds": first}
    matrix = encoder.encode(item_text.tolist(), progress=progress).astype(np.float32)
    bad = ~np.isfinite(matrix).all(axis=1)
    if bad.any():
        raise BenchError(f"encoder {encoder.name!r} produced NaN/Inf for {int(bad.sum())} item(s), first: item "
                         f"{item_text.index[np.flatnonzero(bad)[0]]!r}")
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".npy")
    os.close(fd)
    np.save(tmp, matrix)
    seconds = time.perf_counter() - start
    meta = {"key": key, "encoder": encoder.name, "fingerprint": encoder.fingerprint(), "template": template,
            "n_items": len(item_text), "dim": int(matrix.shape[1]), "encode_seconds": seconds}
    meta_path.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, path)
    return matrix, {**info, "cache_hit": False, "seconds": seconds, "first_encode_seconds": seconds}
