"""LLM2Rec (paper 003) training stages: a decoder LLM becomes an item-embedding model.

    CSFT  collaborative supervised fine-tuning: history titles -> next title (causal LM, target-only loss)
    MNTP  masked next-token prediction with the causal mask removed (token i predicted at position i-1)
    IC    item-level contrastive learning (SimCSE: two dropout views, mean pooling, InfoNCE)

Each stage reads a plain HF folder and writes one (LoRA merged), so stages chain and any stage's folder
feeds `LLMItemEncoder`. `run_stage` caches each stage's output under
`cache_dir/llm2rec/<stage>-<sha256(base fingerprint, data hash, settings)[:16]>/` with a `stage.json`;
`pipeline` runs the chain. Defaults follow the authors' code (noted where it differs from the paper).

Modules: `model` (bidirectional forward, pooling, LLMItemEncoder), `data` (examples, padding, masking,
losses), `train` (settings, model preparation, the stage's use of the shared loop `methods.llm.train`),
this one (stages, cache, pipeline, throughput). The public names of the first three are importable here.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.errors import BenchError, UnknownChoiceError
from methods.llm2rec.data import (
    build_csft_examples,
    csft_collate,
    csft_tokenize,
    info_nce,
    mask_token_id,
    mntp_mask,
    mntp_texts,
    pad_batch,
    shifted_token_loss,
)
from methods.llm2rec.model import (
    LLMItemEncoder,
    bidirectional_forward,
    bidirectional_mask,
    causal_forward,
    decoder_of,
    mean_pool,
)
from methods.llm2rec.train import (
    SETTINGS,
    STAGES,
    StageSettings,
    finish,
    prepare_model,
    resolve_settings,
    run_steps,
    set_dropout,
)

__all__ = [
    "STAGES", "SETTINGS", "LLMItemEncoder", "bidirectional_forward", "bidirectional_mask", "build_csft_examples",
    "csft", "csft_collate", "csft_throughput", "csft_tokenize", "data_hash", "info_nce", "item_contrastive",
    "mask_token_id", "mntp", "mntp_mask", "pad_batch", "pipeline", "read_stage", "resolve_settings", "run_stage",
    "set_dropout", "shifted_token_loss",
]

CACHE_SUBDIR = "llm2rec"
STAGE_FILE = "stage.json"
# settings that do not change a stage's output: left out of the cache key
NON_SEMANTIC = ("device", "progress")


def _to(batch: dict, device: str) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def run_csft(model_dir: Path | str, examples: Sequence[tuple[str, str]], settings: StageSettings):
    """CSFT training without saving: (model, peft wrapper or None, tokenizer, stats)."""
    if not examples:
        raise BenchError("llm2rec csft: no training examples (users need >= 2 training items)")
    model, wrapper, tokenizer, device = prepare_model(model_dir, settings)
    head = model.get_output_embeddings()

    def step(indices):
        batch = _to(csft_collate(tokenizer, [examples[i] for i in indices], settings.max_length), device)
        hidden = causal_forward(model, batch["input_ids"], batch["attention_mask"])
        return shifted_token_loss(hidden, batch["labels"], head), batch["attention_mask"].sum()

    stats = run_steps(model, settings, len(examples), step, "llm2rec csft", device)
    stats["examples"] = len(examples)
    return model, wrapper, tokenizer, stats


def csft(model_dir: Path | str, examples: Sequence[tuple[str, str]], out_dir: Path | str,
         settings: dict | StageSettings | None = None) -> dict:
    """Collaborative SFT of the causal LM on (history, next title) examples; saves to `out_dir`."""
    settings = resolve_settings("csft", settings)
    model, wrapper, tokenizer, stats = run_csft(model_dir, list(examples), settings)
    finish(model, wrapper, tokenizer, out_dir, settings)
    return stats


def mntp(model_dir: Path | str, texts: Sequence[str], out_dir: Path | str,
         settings: dict | StageSettings | None = None) -> dict:
    """Masked next-token prediction on the bidirectional model; saves to `out_dir`."""
    import torch

    settings = resolve_settings("mntp", settings)
    texts = [t for t in texts if t]
    if not texts:
        raise BenchError("llm2rec mntp: no texts to train on")
    model, wrapper, tokenizer, device = prepare_model(model_dir, settings)
    mask_id = mask_token_id(tokenizer, settings.mask_token)
    specials = sorted({i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id)
                       if i is not None})
    head = model.get_output_embeddings()
    generator = torch.Generator().manual_seed(settings.seed + 1)
    vocab = min(len(tokenizer), model.config.vocab_size)

    def step(indices):
        ids = tokenizer([texts[i] for i in indices], truncation=True, max_length=settings.max_length)["input_ids"]
        input_ids, attention = pad_batch(ids, tokenizer.pad_token_id)
        corrupted, labels = mntp_mask(input_ids, attention, mask_id, vocab, settings.mask_probability,
                                      generator, specials)
        corrupted, labels, attention = corrupted.to(device), labels.to(device), attention.to(device)
        hidden = bidirectional_forward(model, corrupted, attention)
        return shifted_token_loss(hidden, labels, head), attention.sum()

    stats = run_steps(model, settings, len(texts), step, "llm2rec mntp", device)
    stats.update(texts=len(texts), mask_token=settings.mask_token, mask_token_id=mask_id)
    finish(model, wrapper, tokenizer, out_dir, settings)
    return stats


def item_contrastive(model_dir: Path | str, titles: Sequence[str], out_dir: Path | str,
                     settings: dict | StageSettings | None = None) -> dict:
    """SimCSE on item titles with the bidirectional model (two dropout views, mean pooling); saves to out_dir."""
    settings = resolve_settings("ic", settings)
    titles = list(dict.fromkeys(t for t in titles if t))  # unique: a duplicate in a batch is a false negative
    if len(titles) < 2:
        raise BenchError("llm2rec ic: need at least 2 distinct titles")
    model, wrapper, tokenizer, device = prepare_model(model_dir, settings)
    old_dropout = set_dropout(model, settings.dropout)
    decoder = decoder_of(model)

    def step(indices):
        ids = tokenizer([titles[i] for i in indices], truncation=True, max_length=settings.max_length)["input_ids"]
        input_ids, attention = pad_batch(ids, tokenizer.pad_token_id)
        input_ids, attention = input_ids.to(device), attention.to(device)
        z1 = mean_pool(bidirectional_forward(decoder, input_ids, attention), attention)
        z2 = mean_pool(bidirectional_forward(decoder, input_ids, attention), attention)
        return info_nce(z1, z2, settings.temperature), 2 * attention.sum()

    stats = run_steps(model, settings, len(titles), step, "llm2rec ic", device)
    stats["titles"] = len(titles)
    for key, value in old_dropout.items():  # the saved config keeps the base model's dropout
        setattr(model.config, key, value)
    finish(model, wrapper, tokenizer, out_dir, settings)
    return stats


STAGE_FUNCTIONS: dict[str, Callable] = {"csft": csft, "mntp": mntp, "ic": item_contrastive}


# ---------------------------------------------------------------- cache and pipeline


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def data_hash(value: Any) -> str:
    """sha256 of a JSON-able training input (examples, texts, titles)."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def stage_key(stage: str, base_fingerprint: str, data: str, settings: StageSettings) -> tuple[str, dict]:
    semantic = {k: v for k, v in settings.model_dump().items() if k not in NON_SEMANTIC}
    parts = {"base": base_fingerprint, "data": data, "settings": semantic}
    return hashlib.sha256(canonical_json(parts).encode()).hexdigest()[:16], parts


def run_stage(stage_name: str, base_dir: Path | str, data_hash: str, settings: dict | StageSettings | None,
              cache_dir: Path | str, fn: Callable[[Path], dict | None]) -> Path:
    """The cached output folder of one stage, computed by `fn(out_dir) -> stats` only if absent.

    Folder: cache_dir/llm2rec/<stage>-<sha256(base files fingerprint, data_hash, settings)[:16]>, built by
    `bench.cache.cached_artifact` (lock in cache_dir/.locks, so parallel runs train a stage once; temp
    folder renamed into place; a manifest of the folder's files, left out of every fingerprint, so stage
    keys do not depend on it). `fn` must create `out_dir` (the stage functions do); a `stage.json` (inputs,
    settings, steps, tokens, seconds, loss curve) is added. A folder is verified before reuse (stage.json
    parses and holds the folder's key, the files match the manifest); one that fails is reported on one
    stderr line, removed and trained again.
    """
    from bench.cache import cached_artifact
    from bench.data.assets import files_fingerprint

    resolved = resolve_settings(stage_name, settings)
    cache_dir = Path(cache_dir)
    base_fingerprint = files_fingerprint(Path(base_dir), cache_dir)
    key, parts = stage_key(stage_name, base_fingerprint, data_hash, resolved)

    def compute(tmp: Path) -> Path:
        out_dir = tmp / "out"
        start = time.perf_counter()
        stats = dict(fn(out_dir) or {})
        if not out_dir.is_dir():
            raise BenchError(f"llm2rec {stage_name}: the stage function did not create {out_dir}")
        record = {"stage": stage_name, "key": key, "base_dir": str(base_dir), "base_fingerprint": base_fingerprint,
                  "data_hash": data_hash, "settings": resolved.model_dump(), "key_parts": parts,
                  "wall_seconds": time.perf_counter() - start, **stats}
        (out_dir / STAGE_FILE).write_text(json.dumps(record, indent=1))
        return out_dir

    target, _ = cached_artifact(cache_dir / CACHE_SUBDIR / f"{stage_name}-{key}", compute, memo_dir=cache_dir,
                                check=lambda folder: _stage_problem(folder, key), lock_dir=cache_dir / ".locks")
    return target


def _stage_problem(folder: Path, key: str) -> str | None:
    """None when a stage folder's stage.json parses and names this key (its files are checked against
    its manifest by `cached_artifact`)."""
    try:
        record = json.loads((folder / STAGE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return f"{STAGE_FILE} does not parse ({err})"
    if not isinstance(record, dict) or record.get("key") != key:
        found = record.get("key") if isinstance(record, dict) else None
        return f"{STAGE_FILE} is for key {found!r}, the folder for {key!r}"
    return None


def read_stage(folder: Path | str) -> dict:
    """The stage.json of a stage folder."""
    return json.loads((Path(folder) / STAGE_FILE).read_text())


def _resolve_pipeline(settings: dict | None, stages: Sequence[str]) -> dict[str, StageSettings]:
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(STAGES))
    if unknown:
        raise BenchError(f"llm2rec: unknown settings section(s) {', '.join(unknown)}; "
                         f"valid sections: {', '.join(STAGES)}")
    stages = tuple(stages)
    for stage in stages:
        if stage not in STAGES:
            raise UnknownChoiceError("LLM2Rec stage", stage, STAGES)
    if not stages or len(set(stages)) != len(stages) or list(stages) != sorted(stages, key=STAGES.index):
        raise BenchError(f"llm2rec: stages must be distinct and in the order {', '.join(STAGES)}; got {stages}")
    return {stage: resolve_settings(stage, settings.get(stage)) for stage in STAGES}


def pipeline(base_dir: Path | str, train_sequences: list[list[str]], titles: Sequence[str],
             settings: dict | None, cache_dir: Path | str, stages: Sequence[str] = STAGES) -> dict[str, Path]:
    """Run `stages` (an ordered subset of csft, mntp, ic), each from the previous one's output folder.

    `settings` = {"csft": {...}, "mntp": {...}, "ic": {...}} (omitted sections: defaults);
    `train_sequences` = each user's chronological *training* titles; `titles` = the item titles.
    Returns {stage: output folder}; cached stages are not recomputed.
    """
    resolved = _resolve_pipeline(settings, stages)
    examples = build_csft_examples(train_sequences, resolved["csft"].max_history)
    data = {"csft": examples, "mntp": mntp_texts(resolved["mntp"].texts, titles, examples), "ic": list(titles)}
    current, out = Path(base_dir), {}
    for stage in stages:
        inputs, stage_settings, base = data[stage], resolved[stage], current

        def compute(out_dir, stage=stage, base=base, inputs=inputs, stage_settings=stage_settings):
            return STAGE_FUNCTIONS[stage](base, inputs, out_dir, stage_settings)

        current = run_stage(stage, base, data_hash(inputs), stage_settings, cache_dir, compute)
        out[stage] = current
    return out


def csft_throughput(model_dir: Path | str, examples: Sequence[tuple[str, str]], steps: int, batch_size: int,
                    **settings) -> dict:
    """CSFT training speed: tokens/s and GFLOP/s (6 * parameters * tokens), the first step left out as warmup.

    Extra keyword settings go to CSFT (e.g. device, precision, max_length, lora); nothing is saved.
    """
    options = {"max_steps": steps, "batch_size": batch_size, "grad_accum": 1, "warmup_steps": 0,
               "progress": False, **settings}
    resolved = resolve_settings("csft", options)
    model, _, _, stats = run_csft(model_dir, list(examples), resolved)
    n_params = int(sum(p.numel() for p in model.parameters()))
    timed = slice(1, None) if steps > 1 else slice(None)
    tokens, seconds = sum(stats["step_tokens"][timed]), sum(stats["step_seconds"][timed])
    tokens_per_s = tokens / seconds if seconds > 0 else float("nan")
    return {"tokens_per_s": tokens_per_s, "gflops_per_s": 6 * n_params * tokens_per_s / 1e9,
            "tokens": tokens, "seconds": seconds, "steps_timed": len(stats["step_seconds"][timed]),
            "n_params": n_params, "device": stats["device"], "bf16": stats["bf16"]}
