"""CoLLM / TALLRec / ICL settings (paper 002): the LLM, its prompt and answers, LoRA and step-1 / step-2
training, and for CoLLM the CF model whose vectors are mapped into the prompt."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bench.search import FloatRange, Nested
from bench.settings import path_field
from methods.backbones.pointwise import CFSettings
from methods.collm import model as cm
from methods.llm.lora import LoRASettings


class LLMSettings(BaseModel):
    """An LLM asked the Yes / No question; LoRA tuning settings apply where the method tunes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_model: str = path_field("smollm2")  # "smollm2" (embedded asset) or a local causal-LM folder (a 7B)
    prompt: str = cm.TEXT_PROMPT
    answer_tokens: tuple[str, str] = (" Yes", " No")
    scoring: Literal["yes_logit", "yes_no_softmax"] = "yes_no_softmax"  # TALLRec's
    lora: LoRASettings = Field(default_factory=LoRASettings)
    learning_rate: float = Field(1e-4, gt=0)
    weight_decay: float = Field(1e-3, ge=0)
    epochs: int = Field(1, ge=1)
    batch_size: int = Field(8, ge=1)
    max_train_pairs: int = Field(0, ge=0)  # 0 = every training pair; else a random subset (run seed)
    max_length: int | None = Field(None, ge=8)  # None = the model's context (max_position_embeddings)
    # the LoRA step's loss; "scoring" = the method's own scoring loss (CoLLM's code trains both steps with
    # BCE on the Yes logit); "yes_no_softmax" = cross-entropy over the Yes / No logits (TALLRec before version
    # 4); "lm" = the causal-LM loss on the response (TALLRec's code, HF Trainer): cross-entropy over the whole
    # vocabulary of the label's answer token at the answer position (model.lm_loss)
    stage1_loss: Literal["scoring", "yes_logit", "yes_no_softmax", "lm"] = "scoring"
    # the learning-rate schedule of every tuned stage (step 1, step 2, t3's one step; methods/llm/train.py's
    # schedule_factor over the stage's epochs x batches per epoch optimizer steps): a linear warmup over
    # `warmup_steps` steps (0: ceil(warmup_ratio x the stage's steps), HF Trainer's rule), then `lr_schedule`
    # (constant, or linear / cosine decay to 0 at the stage's last step). The defaults (constant, no warmup) are
    # the plain optimizer of the versions before these settings.
    warmup_steps: int = Field(0, ge=0)
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    lr_schedule: Literal["constant", "linear", "cosine"] = "constant"
    # model selection on validation (both papers keep the best epoch by validation AUC): evaluate every
    # `eval_every` optimizer steps (0 = at the end of each epoch), or with `evaluations` N > 0 at N steps spread
    # evenly over the stage's steps (the last one included; this wins over eval_every), and keep the best state
    # of what is trained; `patience` P > 0 ends a stage after P evaluations without a validation-AUC gain
    # (TALLRec's code: HF's EarlyStoppingCallback, patience 10); 0 = never
    select_on_valid: bool = True
    eval_every: int = Field(0, ge=0)
    evaluations: int = Field(0, ge=0)
    patience: int = Field(0, ge=0)
    valid_pairs: int = Field(0, ge=0)  # validation pairs scored per evaluation (0 = all; else a run-seed sample)
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"
    # the LLM's arithmetic in training steps, validation and scoring: "fp32" (the versions before this setting),
    # or "bf16" = bfloat16 autocast with float32 weights and optimizer state (mixed precision, as the authors'
    # GPU runs: fp16 AMP in both codes); on a CPU with AVX-512 BF16 it scores about 1.8x faster. A setting, not
    # a run option: it changes the numbers (scores within ~1e-2 of fp32's logits)
    precision: Literal["fp32", "bf16"] = "fp32"

    @model_validator(mode="after")
    def _distinct_answers(self):
        if any(not str(word).strip() for word in self.answer_tokens):
            raise ValueError(f"answer_tokens {list(self.answer_tokens)!r}: an answer is empty")
        if self.answer_tokens[0] == self.answer_tokens[1]:
            raise ValueError(f"answer_tokens {list(self.answer_tokens)!r}: the Yes and No answers must differ (the "
                             "same token for both scores every pair alike)")
        return self

    @model_validator(mode="after")
    def _selection_needs_validation(self):
        if not self.select_on_valid and (self.evaluations or self.patience):
            raise ValueError("evaluations and patience select on validation: they need select_on_valid: true "
                             f"(got evaluations={self.evaluations}, patience={self.patience})")
        return self


# what `bench tune` searches for a LoRA-tuned LLM (bench.search): the LoRA step's learning rate and the LoRA rank
# (LoRASettings' space). Declared on the tuned methods' classes, not on LLMSettings: ICL tunes nothing.
LORA_TUNING_SPACE = {"learning_rate": FloatRange(low=1e-5, high=1e-3, log=True), "lora": Nested()}


class TALLRecSettings(LLMSettings):
    """TALLRec's: the LoRA step trains the causal-LM loss on the response (its code); scored by the Yes / No
    softmax."""

    search_space: ClassVar[dict] = LORA_TUNING_SPACE

    stage1_loss: Literal["scoring", "yes_logit", "yes_no_softmax", "lm"] = "lm"


class CoLLMSettings(LLMSettings):
    # + the mapper's learning rate (step 2 trains the CF -> token mapper)
    search_space: ClassVar[dict] = {**LORA_TUNING_SPACE,
                                    "mapper_learning_rate": FloatRange(low=1e-4, high=1e-2, log=True)}

    prompt: str = cm.COLLM_PROMPT
    scoring: Literal["yes_logit", "yes_no_softmax"] = "yes_logit"  # CoLLM's: BCE on the Yes logit
    stage1_prompt: str = cm.TEXT_PROMPT
    tuning: Literal["two_step", "t1", "t2", "t3"] = "two_step"
    cf_model: Literal["mf", "lightgcn", "sasrec", "din"] = "mf"  # the CF model whose vectors are mapped
    # the pairs the CF model is pre-trained on (with its own early stop on valid): "all" = every training pair of
    # the split (CoLLM's paper and code; a few-shot split limits only the LLM's pairs: the encoder is the CF
    # baseline's model on all pairs, same seed and settings); "train" = the view's train part only (a few-shot
    # split's N pairs, the reranker's capped pairs): CoLLM version 3's behaviour
    cf_pretrain_pairs: Literal["all", "train"] = "all"
    mapper_learning_rate: float = Field(1e-3, gt=0)
    mapper_hidden_factor: int = Field(10, ge=1)
    cf: CFSettings = Field(default_factory=CFSettings)


def collm_components(record: dict) -> list:
    """The trained components of a CoLLM-family run (TALLRec, CoLLM-*, the ensembles, the rerankers): the run's own
    model, the CF encoder (`method_info.cf`, its epochs against the `cf` settings' cap), the reranker's retrieval
    backbone (`rerank.retrieval`), and the LLM steps that kept their best validation state (`stage1`, `stage2`)."""
    from bench.components import by_epochs, by_flag, by_selection, epoch_cap, find_settings, model_training

    spec = record.get("spec") or {}
    info = record.get("method_info") or {}
    out = model_training(record)
    if isinstance(info.get("cf"), dict):
        out.append(by_epochs("CF encoder", info["cf"], epoch_cap(find_settings(spec.get("method_settings"), "cf"))))
    retrieval = (info.get("rerank") or {}).get("retrieval") if isinstance(info.get("rerank"), dict) else None
    if isinstance(retrieval, dict):
        converged = retrieval.get("converged")
        if converged is None:
            converged = (retrieval.get("training") or {}).get("early_stopped")
        out.append(by_flag("retrieval backbone", converged))
    for step in (1, 2):
        stage = info.get(f"stage{step}")
        out.append(by_selection(f"LLM step {step}", stage.get("selection") if isinstance(stage, dict) else None))
    return [part for part in out if part is not None]
