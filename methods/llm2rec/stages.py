"""LLM2Rec (paper 003) training stages: a decoder LLM becomes an item-embedding model.

    CSFT  collaborative supervised fine-tuning: history titles -> next title (causal LM, target-only loss)
    MNTP  masked next-token prediction with the causal mask removed (token i predicted at position i-1)
    IC    item-level contrastive learning (SimCSE: two dropout views, mean pooling, InfoNCE)

Each stage reads a plain HF folder and writes one (LoRA merged), so stages chain and any stage's folder
feeds `LLMItemEncoder`. `run_stage` caches each stage's output under
`cache_dir/llm2rec/<stage>-<sha256(base fingerprint, data hash, settings)[:16]>/` with a `stage.json`;
`pipeline` runs the chain. Defaults follow the authors' code (noted where it differs from the paper).

Validation (a stage's `evaluations` > 0): the stage's own loss on held-out data, computed the same way at
each evaluation (a fixed seeded sample of `valid_examples`, fixed batches, fixed masks and dropout), lower is
better; the best evaluation's state is saved and `stage.json` records the `selection`:
    CSFT  target-only loss of each user's validation item(s) after the user's known titles (training
          interactions; a held-out user's validation context), eval mode
    MNTP  masked-token loss on the validation texts (`mntp_texts` of the stage's kind), masks drawn once
          from a generator seeded by the stage's seed, eval mode
    IC    InfoNCE between two dropout views of the validation items' (unique) titles, train mode (the views
          come from dropout) with the random state seeded by the stage's seed at each evaluation
The validation data enters the stage's cache key (its hash) only when `evaluations` > 0.

Modules: `model` (bidirectional forward, pooling, LLMItemEncoder), `data` (examples, padding, masking,
losses), `train` (settings, model preparation, the stage's use of the shared loop `methods.llm.train`),
this one (stages, cache, pipeline, throughput). The public names of the first three are importable here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.errors import BenchError, UnknownChoiceError
from bench.hashing import json_hash
from methods.llm.load import cuda_devices
from methods.llm2rec.data import (
    build_csft_examples,
    build_csft_valid_examples,
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
    SELECTION_FIELDS,
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
    "build_csft_valid_examples", "validation_inputs", "valid_sample",
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


def valid_sample(items: Sequence, settings: StageSettings) -> list:
    """The validation items a stage scores: `valid_examples` of them drawn without replacement by a numpy
    Generator seeded with the stage's `seed` (all of them when there are no more), in their given order."""
    import numpy as np

    items = list(items)
    if len(items) <= settings.valid_examples:
        return items
    rows = np.sort(np.random.default_rng(settings.seed).choice(len(items), size=settings.valid_examples,
                                                               replace=False))
    return [items[int(r)] for r in rows]


def _valid_chunks(n: int, batch_size: int) -> list[list[int]]:
    """Fixed batches over n validation items: ceil(n / batch_size) of near-equal size (no ragged tail: an IC
    batch of one row would have no negative)."""
    k = max(1, -(-n // batch_size))
    return [list(range(n * i // k, n * (i + 1) // k)) for i in range(k)]


def _require_valid(stage: str, settings: StageSettings, valid, least: int = 1) -> list:
    valid = list(valid or [])
    if len(valid) < least:
        raise BenchError(f"llm2rec {stage}: evaluations={settings.evaluations} needs at least {least} validation "
                         f"example(s), got {len(valid)}")
    return valid


def _token_loss_sum(hidden, labels, head) -> tuple[float, int]:
    """(sum of the shifted token losses, number of labelled tokens) of one batch."""
    n = int((labels[:, 1:] != -100).sum())
    return float(shifted_token_loss(hidden, labels, head)) * n, n


def _token_loss_validator(model, batches: list, forward: Callable) -> Callable[[], float]:
    """value() = the token-weighted mean shifted-token loss of the current model over fixed `batches`
    (`forward(batch) -> (hidden, labels)`), in eval mode without gradients; the model is left in train mode."""
    import torch

    head = model.get_output_embeddings()

    def value() -> float:
        total, count = 0.0, 0
        model.eval()
        try:
            with torch.no_grad():
                for batch in batches:
                    hidden, labels = forward(batch)
                    loss, n = _token_loss_sum(hidden, labels, head)
                    total, count = total + loss, count + n
        finally:
            model.train()
        return total / count if count else float("nan")

    return value


def csft_validator(model, tokenizer, examples: Sequence[tuple[str, str]], settings: StageSettings, device: str
                   ) -> Callable[[], float]:
    """The CSFT validation loss (target tokens only, token-weighted mean) of the current model on fixed
    batches of `examples`, in eval mode without gradients (the model is left in train mode)."""

    batches = [csft_collate(tokenizer, [examples[i] for i in idx], settings.max_length)
               for idx in _valid_chunks(len(examples), settings.batch_size)]

    def forward(batch):
        batch = _to(batch, device)
        return causal_forward(model, batch["input_ids"], batch["attention_mask"]), batch["labels"]

    return _token_loss_validator(model, batches, forward)


def mntp_validator(model, tokenizer, texts: Sequence[str], settings: StageSettings, device: str, mask_id: int,
                   vocab: int, specials: Sequence[int]) -> Callable[[], float]:
    """The MNTP validation loss of the current model: masks drawn once (a generator seeded by seed + 2, apart
    from training's seed + 1), so every evaluation scores the same corrupted batches; eval mode, no gradients."""
    import torch

    generator = torch.Generator().manual_seed(settings.seed + 2)
    batches = []
    for idx in _valid_chunks(len(texts), settings.batch_size):
        ids = tokenizer([texts[i] for i in idx], truncation=True, max_length=settings.max_length)["input_ids"]
        input_ids, attention = pad_batch(ids, tokenizer.pad_token_id)
        corrupted, labels = mntp_mask(input_ids, attention, mask_id, vocab, settings.mask_probability, generator,
                                      specials)
        batches.append((corrupted, labels, attention))
    if not any(bool((labels[:, 1:] != -100).any()) for _, labels, _ in batches):
        raise BenchError(f"llm2rec mntp: the validation masks select no token of the {len(texts)} validation "
                         "text(s); raise valid_examples or mask_probability")

    def forward(batch):
        corrupted, labels, attention = batch
        return bidirectional_forward(model, corrupted.to(device), attention.to(device)), labels.to(device)

    return _token_loss_validator(model, batches, forward)


def ic_validator(model, tokenizer, titles: Sequence[str], settings: StageSettings, device: str
                 ) -> Callable[[], float]:
    """The IC validation loss of the current model: InfoNCE between two dropout views of fixed batches of
    `titles` (row-weighted mean), in train mode (the views come from dropout) without gradients, the random
    state forked and seeded by the stage's seed, so each evaluation draws the same dropout masks."""
    import torch

    decoder = decoder_of(model)
    batches = []
    for idx in _valid_chunks(len(titles), settings.batch_size):
        ids = tokenizer([titles[i] for i in idx], truncation=True, max_length=settings.max_length)["input_ids"]
        batches.append(pad_batch(ids, tokenizer.pad_token_id))
    devices = cuda_devices(device)

    def value() -> float:
        total = 0.0
        model.train()
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            torch.manual_seed(settings.seed)
            for input_ids, attention in batches:
                input_ids, attention = input_ids.to(device), attention.to(device)
                z1 = mean_pool(bidirectional_forward(decoder, input_ids, attention), attention)
                z2 = mean_pool(bidirectional_forward(decoder, input_ids, attention), attention)
                total += float(info_nce(z1, z2, settings.temperature)) * len(input_ids)
        return total / len(titles)

    return value


def run_csft(model_dir: Path | str, examples: Sequence[tuple[str, str]], settings: StageSettings,
             valid: Sequence[tuple[str, str]] | None = None):
    """CSFT training without saving: (model, peft wrapper or None, tokenizer, stats); `valid`: the
    validation examples (used when settings.evaluations > 0)."""
    if not examples:
        raise BenchError("llm2rec csft: no training examples (users need >= 2 training items)")
    if settings.evaluations:
        valid = valid_sample(_require_valid("csft", settings, valid), settings)
    model, wrapper, tokenizer, device = prepare_model(model_dir, settings)
    head = model.get_output_embeddings()

    def step(indices):
        batch = _to(csft_collate(tokenizer, [examples[i] for i in indices], settings.max_length), device)
        hidden = causal_forward(model, batch["input_ids"], batch["attention_mask"])
        return shifted_token_loss(hidden, batch["labels"], head), batch["attention_mask"].sum()

    validate = csft_validator(model, tokenizer, valid, settings, device) if settings.evaluations else None
    stats = run_steps(model, settings, len(examples), step, "llm2rec csft", device, validate,
                      len(valid) if settings.evaluations else 0, "valid_csft_loss")
    stats["examples"] = len(examples)
    return model, wrapper, tokenizer, stats


def csft(model_dir: Path | str, examples: Sequence[tuple[str, str]], out_dir: Path | str,
         settings: dict | StageSettings | None = None, valid: Sequence[tuple[str, str]] | None = None) -> dict:
    """Collaborative SFT of the causal LM on (history, next title) examples; saves to `out_dir`. `valid`:
    (history, validation title) examples, scored when `evaluations` > 0 (the best state is saved)."""
    settings = resolve_settings("csft", settings)
    model, wrapper, tokenizer, stats = run_csft(model_dir, list(examples), settings,
                                                list(valid) if valid is not None else None)
    finish(model, wrapper, tokenizer, out_dir, settings)
    return stats


def mntp(model_dir: Path | str, texts: Sequence[str], out_dir: Path | str,
         settings: dict | StageSettings | None = None, valid: Sequence[str] | None = None) -> dict:
    """Masked next-token prediction on the bidirectional model; saves to `out_dir`. `valid`: validation
    texts, scored when `evaluations` > 0 (the best state is saved)."""
    import torch

    settings = resolve_settings("mntp", settings)
    texts = [t for t in texts if t]
    if not texts:
        raise BenchError("llm2rec mntp: no texts to train on")
    if settings.evaluations:
        valid = valid_sample(_require_valid("mntp", settings, [t for t in valid or [] if t]), settings)
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

    validate = (mntp_validator(model, tokenizer, valid, settings, device, mask_id, vocab, specials)
                if settings.evaluations else None)
    stats = run_steps(model, settings, len(texts), step, "llm2rec mntp", device, validate,
                      len(valid) if settings.evaluations else 0, "valid_mntp_loss")
    stats.update(texts=len(texts), mask_token=settings.mask_token, mask_token_id=mask_id)
    finish(model, wrapper, tokenizer, out_dir, settings)
    return stats


def item_contrastive(model_dir: Path | str, titles: Sequence[str], out_dir: Path | str,
                     settings: dict | StageSettings | None = None, valid: Sequence[str] | None = None) -> dict:
    """SimCSE on item titles with the bidirectional model (two dropout views, mean pooling); saves to out_dir.
    `valid`: validation item titles, scored when `evaluations` > 0 (the best state is saved)."""
    settings = resolve_settings("ic", settings)
    titles = list(dict.fromkeys(t for t in titles if t))  # unique: a duplicate in a batch is a false negative
    if len(titles) < 2:
        raise BenchError("llm2rec ic: need at least 2 distinct titles")
    if settings.evaluations:
        valid = valid_sample(_require_valid("ic", settings, dict.fromkeys(t for t in valid or [] if t), 2),
                             settings)
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

    validate = ic_validator(model, tokenizer, valid, settings, device) if settings.evaluations else None
    stats = run_steps(model, settings, len(titles), step, "llm2rec ic", device, validate,
                      len(valid) if settings.evaluations else 0, "valid_ic_loss")
    stats["titles"] = len(titles)
    for key, value in old_dropout.items():  # the saved config keeps the base model's dropout
        setattr(model.config, key, value)
    finish(model, wrapper, tokenizer, out_dir, settings)
    return stats


STAGE_FUNCTIONS: dict[str, Callable] = {"csft": csft, "mntp": mntp, "ic": item_contrastive}


# ---------------------------------------------------------------- cache and pipeline


def data_hash(value: Any) -> str:
    """sha256 of a JSON-able training input (examples, texts, titles)."""
    return json_hash(value, ensure_ascii=False)


def stage_key(stage: str, base_fingerprint: str, data: str, settings: StageSettings,
              valid: str | None = None) -> tuple[str, dict]:
    """(key, what it hashes): the base model's fingerprint, the training data's hash, the semantic settings
    and, only when `evaluations` > 0, the selection settings and the validation data's hash `valid`. With
    `evaluations` 0 the selection settings change nothing and stay out, so the keys of stage folders trained
    before they existed do not move."""
    selecting = bool(settings.evaluations)
    semantic = {k: v for k, v in settings.model_dump().items()
                if k not in NON_SEMANTIC and (selecting or k not in SELECTION_FIELDS)}
    parts = {"base": base_fingerprint, "data": data, "settings": semantic}
    if selecting:
        if not valid:
            raise BenchError(f"llm2rec {stage}: evaluations={settings.evaluations} needs validation data "
                             "(its hash enters the stage's cache key)")
        parts["valid"] = valid
    return json_hash(parts, 16, ensure_ascii=False), parts


def run_stage(stage_name: str, base_dir: Path | str, data_hash: str, settings: dict | StageSettings | None,
              cache_dir: Path | str, fn: Callable[[Path], dict | None], valid_hash: str | None = None) -> Path:
    """The cached output folder of one stage, computed by `fn(out_dir) -> stats` only if absent.

    Folder: cache_dir/llm2rec/<stage>-<sha256(base files fingerprint, data_hash, settings[, valid_hash])[:16]>
    (`valid_hash`, the validation data's hash, only with `evaluations` > 0), built by
    `bench.cache.cached_artifact` (lock in cache_dir/.locks, so parallel runs train a stage once; temp
    folder renamed into place; a manifest of the folder's files, left out of every fingerprint, so stage
    keys do not depend on it). `fn` must create `out_dir` (the stage functions do); a `stage.json` (inputs,
    settings, steps, tokens, seconds, loss curve, the validation selection) is added. A folder is verified
    before reuse (stage.json parses and holds the folder's key, the files match the manifest); one that fails
    is reported on one stderr line, removed and trained again.
    """
    from bench.cache import cached_artifact
    from bench.data.assets import files_fingerprint

    resolved = resolve_settings(stage_name, settings)
    cache_dir = Path(cache_dir)
    base_fingerprint = files_fingerprint(Path(base_dir), cache_dir)
    key, parts = stage_key(stage_name, base_fingerprint, data_hash, resolved, valid_hash)

    def compute(tmp: Path) -> Path:
        out_dir = tmp / "out"
        start = time.perf_counter()
        stats = dict(fn(out_dir) or {})
        if not out_dir.is_dir():
            raise BenchError(f"llm2rec {stage_name}: the stage function did not create {out_dir}")
        record = {"stage": stage_name, "key": key, "base_dir": str(base_dir), "base_fingerprint": base_fingerprint,
                  "data_hash": data_hash, "settings": resolved.model_dump(), "key_parts": parts,
                  "wall_seconds": time.perf_counter() - start, **stats}
        if "valid" in parts:
            record["valid_hash"] = valid_hash
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


def validation_inputs(valid_sequences: Sequence[tuple[Sequence[str], Sequence[str]]],
                      settings: dict[str, StageSettings]) -> dict[str, list]:
    """Each stage's validation data from (known titles, validation titles) per user: CSFT examples whose
    targets are the validation items (`build_csft_valid_examples`), the MNTP texts of the stage's kind over
    the validation items' titles and those examples, the validation items' unique titles for IC."""
    examples = build_csft_valid_examples(valid_sequences, settings["csft"].max_history)
    titles = list(dict.fromkeys(t for _, targets in valid_sequences for t in targets if t))
    return {"csft": examples, "mntp": mntp_texts(settings["mntp"].texts, titles, examples), "ic": titles}


def pipeline(base_dir: Path | str, train_sequences: list[list[str]], titles: Sequence[str],
             settings: Mapping[str, dict | StageSettings] | None, cache_dir: Path | str,
             stages: Sequence[str] = STAGES, valid_sequences: Sequence[tuple[Sequence[str], Sequence[str]]] | None = None,
             device: str | None = None, progress: bool | None = None) -> dict[str, Path]:
    """Run `stages` (an ordered subset of csft, mntp, ic), each from the previous one's output folder.

    `settings` = {"csft": {...}, "mntp": {...}, "ic": {...}} (typed or as dicts; omitted sections: defaults);
    `device` (a run's resolved device) and `progress` set the stages' runtime fields (no cache key), None keeps
    the settings' own;
    `train_sequences` = each user's chronological *training* titles; `titles` = the item titles;
    `valid_sequences` = per user with validation interactions, (the titles the validation items follow:
    training interactions, or a held-out user's validation context; the validation titles), both in time
    order: the validation data of the stages with `evaluations` > 0 (None: none; such a stage is an error).
    Never pass test interactions. Returns {stage: output folder}; cached stages are not recomputed.
    """
    runtime = {k: v for k, v in (("device", device), ("progress", progress)) if v is not None}
    resolved = {stage: value.model_copy(update=runtime) for stage, value in _resolve_pipeline(settings, stages).items()}
    examples = build_csft_examples(train_sequences, resolved["csft"].max_history)
    data = {"csft": examples, "mntp": mntp_texts(resolved["mntp"].texts, titles, examples), "ic": list(titles)}
    selecting = [stage for stage in stages if resolved[stage].evaluations]
    if selecting and valid_sequences is None:
        raise BenchError(f"llm2rec: {', '.join(selecting)} evaluations > 0 need validation data (valid_sequences)")
    valid = validation_inputs(valid_sequences, resolved) if selecting else {}
    current, out = Path(base_dir), {}
    for stage in stages:
        inputs, stage_settings, base = data[stage], resolved[stage], current
        valid_inputs = valid.get(stage) if stage_settings.evaluations else None

        def compute(out_dir, stage=stage, base=base, inputs=inputs, stage_settings=stage_settings,
                    valid_inputs=valid_inputs):
            return STAGE_FUNCTIONS[stage](base, inputs, out_dir, stage_settings, valid=valid_inputs)

        current = run_stage(stage, base, data_hash(inputs), stage_settings, cache_dir, compute,
                            valid_hash=data_hash(valid_inputs) if valid_inputs is not None else None)
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
