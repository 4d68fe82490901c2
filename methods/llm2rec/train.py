"""LLM2Rec (paper 003) stage settings, model preparation and the stage's use of the shared training loop
(`methods.llm.train`; loading and LoRA from `methods.llm.load` / `methods.llm.lora`).

The device is chosen at run time (`device: auto` -> cuda when torch sees a GPU, else cpu); weights stay
float32 and `precision: auto` turns on bf16 autocast on GPUs that support it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bench.errors import BenchError, UnknownChoiceError
from bench.options import resolve_device
from bench.search import FloatRange
from bench.settings import runtime_field
from methods.llm.load import cuda_devices, load_model, load_tokenizer
from methods.llm2rec.model import save_model_atomic

STAGES = ("csft", "mntp", "ic")
# the validation-selection settings: they change nothing while `evaluations` is 0, so they enter the stage
# cache key only when it is > 0 (stage folders trained before they existed keep their keys)
SELECTION_FIELDS = ("evaluations", "patience", "valid_examples")


class StageSettings(BaseModel):
    """Shared by all stages. Effective batch = batch_size * grad_accum (IC negatives: batch_size only)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # what `bench tune` searches per stage (bench.search); every stage's default lr (3e-4, 5e-5, 2e-4) lies inside
    search_space: ClassVar[dict] = {"lr": FloatRange(low=1e-5, high=1e-3, log=True)}

    lr: float = Field(3e-4, gt=0)
    max_steps: int = Field(1000, ge=1)  # optimizer steps
    batch_size: int = Field(32, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_length: int = Field(512, ge=2)  # tokens per sequence (longer ones truncated)
    seed: int = 0
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0)
    scheduler: Literal["linear", "cosine", "constant"] = "linear"  # after the warmup; HF Trainer's default
    max_grad_norm: float = Field(1.0, ge=0)  # 0: no clipping
    lora: bool = False  # peft LoRA r 8, alpha 16 on q_proj, v_proj; merged into the saved weights
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on a bf16-capable GPU
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"
    gradient_checkpointing: bool = False
    # model selection on validation (the stage's own loss on held-out data, lower is better): 0 = none, the
    # last step's state is saved; N = N evaluations spread over max_steps (`spread_steps`), the state of the
    # best one is saved. The authors' CSFT script (run_csft.py) evaluates every 2000 of 10000 steps on 2000
    # sampled validation rows and keeps the best eval loss (= evaluations 5, valid_examples 2000); their MNTP
    # and IC keep the last step (= 0)
    evaluations: int = Field(0, ge=0)
    patience: int = Field(0, ge=0)  # stop after this many evaluations without a gain (0: never)
    valid_examples: int = Field(128, ge=1)  # validation examples scored per evaluation (a fixed seeded sample)
    # how to run, not what: left out of the stage cache key and of run ids
    device: str = runtime_field("auto")  # auto: cuda if torch sees a GPU, else cpu
    progress: bool = runtime_field(True)

    @model_validator(mode="after")
    def _patience_needs_evaluations(self):
        if self.patience and not self.evaluations:
            raise ValueError(f"patience={self.patience} needs evaluations > 0 (got evaluations=0): patience "
                             "counts validation evaluations without a gain")
        return self


class CSFTSettings(StageSettings):
    # code: lr 3e-4, batch 128 (micro 4 x accumulation), 10000 steps, 200 warmup steps, cutoff 1024
    lr: float = Field(3e-4, gt=0)
    max_steps: int = Field(10000, ge=1)
    batch_size: int = Field(16, ge=1)
    grad_accum: int = Field(8, ge=1)
    max_length: int = Field(1024, ge=2)
    warmup_steps: int = Field(200, ge=0)
    max_history: int = Field(10, ge=1)  # used by `pipeline` to build the examples


class MNTPSettings(StageSettings):
    # code (LLM2Vec recipe): batch 32, 1000 steps, 20% masking, "blank" mask token "_", max length 512;
    # no learning rate given there, so HF Trainer's default 5e-5
    lr: float = Field(5e-5, gt=0)
    max_steps: int = Field(1000, ge=1)
    batch_size: int = Field(32, ge=1)
    mask_probability: float = Field(0.2, gt=0, lt=1)
    mask_token: str = "_"  # a decoder has no mask token; this one stands in (its id is recorded)
    texts: Literal["titles", "sequences", "both"] = "titles"  # what `pipeline` feeds: item titles (paper)


class ICSettings(StageSettings):
    # code: lr 2e-4, batch 256, 1000 steps, 300 warmup steps, dropout 0.2, loss scale 10 (= temperature 0.1;
    # the paper says 0.2)
    lr: float = Field(2e-4, gt=0)
    max_steps: int = Field(1000, ge=1)
    batch_size: int = Field(256, ge=2)
    warmup_steps: int = Field(300, ge=0)
    dropout: float = Field(0.2, ge=0, lt=1)
    temperature: float = Field(0.1, gt=0)


SETTINGS: dict[str, type[StageSettings]] = {"csft": CSFTSettings, "mntp": MNTPSettings, "ic": ICSettings}


def resolve_settings(stage: str, settings: dict[str, Any] | StageSettings | None) -> StageSettings:
    """Validated settings of `stage` (defaults filled in); BenchError (one line) names the key, the value
    and what is valid, or the unknown key and the valid ones."""
    from bench.settings import validate_settings

    if stage not in SETTINGS:
        raise UnknownChoiceError("LLM2Rec stage", stage, SETTINGS)
    cls = SETTINGS[stage]
    if isinstance(settings, BaseModel) and not isinstance(settings, cls):
        settings = settings.model_dump()
    return validate_settings(cls, settings, f"llm2rec {stage}")


def _use_bf16(settings: StageSettings, device: str) -> bool:
    import torch

    if settings.precision == "fp32":
        return False
    cuda_bf16 = device.startswith("cuda") and torch.cuda.is_bf16_supported()
    if settings.precision == "bf16":
        return cuda_bf16 or device == "cpu"
    return cuda_bf16


def prepare_model(model_dir: Path | str, settings: StageSettings):
    """(model, peft wrapper or None, tokenizer, device) ready to train."""
    import torch

    device = resolve_device(settings.device)
    torch.manual_seed(settings.seed)
    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir, device, settings.attn_implementation, use_cache=False)
    if settings.gradient_checkpointing:
        # transformers >= 5 renamed gradient_checkpointing_* to activation_checkpointing_*
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    wrapper = None
    if settings.lora:  # r 8, alpha 16, dropout 0.05 on q_proj / v_proj
        from methods.llm.lora import add_lora, lora_config

        # no seed: the initialisation continues the global random state seeded above, as do the dropout masks
        wrapper = add_lora(model, lora_config(task_type="CAUSAL_LM"))
    model.train()
    return model, wrapper, tokenizer, device


def run_steps(model, settings: StageSettings, n: int, step_fn: Callable, desc: str, device: str,
              validate: Callable[[], float] | None = None, n_valid: int = 0, metric: str = "valid_loss") -> dict:
    """Optimise `model` for settings.max_steps steps of `grad_accum` micro-batches of its n examples.

    `step_fn(indices) -> (loss, tokens)` computes one micro-batch's loss (the model's forward pass inside)
    and the number of non-pad input tokens it processed. AdamW, the warmup + decay schedule, gradient
    clipping, bf16 autocast where `precision` asks for it. With `settings.evaluations` > 0, `validate()`
    (the stage's validation loss of the current model, deterministic, lower is better; run under the same
    autocast and with the global random state forked, so evaluating changes nothing in training) is called
    at that many steps spread over the stage, `patience` may end it early, and the trainable parameters end
    at the best evaluation's state (`methods.llm.train.BestState`). Returns steps, tokens, seconds, losses
    (and `selection` when evaluated).
    """
    import torch

    from methods.llm.train import BestState, schedule_factor, shuffled_batches, spread_steps, train_loop

    bf16 = _use_bf16(settings, device)
    params = [p for p in model.parameters() if p.requires_grad]
    selector, planned = None, []
    if settings.evaluations:
        if validate is None:
            raise BenchError(f"{desc}: evaluations={settings.evaluations} needs validation data")
        devices = cuda_devices(device)
        valid_seconds = [0.0]

        def value() -> float:
            # fork_rng: the training's random state (dropout masks, LoRA dropout) is the same with or without
            # evaluations; autocast as in training
            start = time.perf_counter()
            with torch.random.fork_rng(devices=devices):
                autocast = (torch.autocast(torch.device(device).type, dtype=torch.bfloat16) if bf16
                            else contextlib.nullcontext())
                with autocast:
                    out = float(validate())
            valid_seconds[0] += time.perf_counter() - start
            return out

        selector = BestState(params, value, mode="min", patience=settings.patience, metric=metric)
        planned = spread_steps(settings.max_steps, settings.evaluations)
    result = train_loop(
        params,
        lambda params: torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay),
        shuffled_batches(n, settings.batch_size, settings.seed), step_fn, steps=settings.max_steps,
        grad_accum=settings.grad_accum, max_grad_norm=settings.max_grad_norm,
        make_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda s: schedule_factor(
            s, settings.warmup_steps, settings.max_steps, settings.scheduler)),
        model=model, device=device, autocast_dtype=torch.bfloat16 if bf16 else None, check_finite=True,
        hint="lower lr or use precision=fp32", desc=desc, progress=settings.progress,
        evaluate=selector.evaluate if selector else None, eval_steps=set(planned) if planned else None,
        should_stop=selector.should_stop if selector and settings.patience else None)
    stats = {"steps": result.steps, "tokens": sum(result.step_tokens), "seconds": result.seconds,
             "losses": result.losses, "step_seconds": result.step_seconds, "step_tokens": result.step_tokens,
             "device": device, "bf16": bf16}
    if selector is not None:
        # the patience rule firing at the last planned step ended nothing early
        selector.finish(result.steps, result.stopped_early and result.steps < settings.max_steps)
        # `seconds` (the loop's wall time) includes the evaluations run inside it; `step_seconds` does not
        stats["selection"] = {**selector.summary(), "n_examples": int(n_valid), "planned_steps": planned,
                              "valid_seconds": valid_seconds[0]}
    return stats


def finish(model, wrapper, tokenizer, out_dir: Path | str, settings: StageSettings) -> Path:
    """Merge LoRA (if any) and save the plain HF folder atomically."""
    if wrapper is not None:
        model = wrapper.merge_and_unload()
    if settings.gradient_checkpointing:
        (getattr(model, "activation_checkpointing_disable", None) or model.gradient_checkpointing_disable)()
    model.config.use_cache = True
    return save_model_atomic(model.cpu(), tokenizer, out_dir)


def set_dropout(model, p: float) -> dict:
    """Set attention/hidden dropout wherever it exists (config fields, modules; Llama/Qwen2 only have
    attention dropout); returns the old config values so the saved config can keep them."""
    import torch

    old = {}
    for key in ("attention_dropout", "hidden_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop", "dropout"):
        if isinstance(getattr(model.config, key, None), float | int) and not isinstance(
                getattr(model.config, key), bool):
            old[key] = getattr(model.config, key)
            setattr(model.config, key, p)
    for name, module in model.named_modules():
        if "lora_" in name:  # LoRA keeps its own dropout
            continue
        if isinstance(module, torch.nn.Dropout):
            module.p = p
        if isinstance(getattr(module, "attention_dropout", None), float | int):
            module.attention_dropout = p
    return old
