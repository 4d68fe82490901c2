"""CoLLM / TALLRec tuning (paper 002): LoRA injection, the training loop over Yes / No pairs and the disk
cache of step-1 adapters, built on `methods.llm` (LoRA helper, training loop) and `bench.cache`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from methods.collm import model as cm
from methods.llm.train import BestState


class LoRATuning:
    """Mixin of `LLMMethod`: uses its settings (LLMSettings), LLM (`lm`, `yes_no`, `pad_id`, `device`) and
    training pairs (`train_data`)."""

    def add_lora(self, seed: int):
        """LoRA layers injected into the LLM, initialised from `seed` alone: the global random state is
        neither read nor advanced (before version 2 the init came from whatever ran earlier in the process,
        so a cached adapter depended on run order)."""
        from methods.llm.lora import add_lora, lora_config, lora_parameters

        # injects LoRA layers into self.lm's modules in place
        self.peft = add_lora(self.lm, lora_config(self.settings.lora), seed, self.device)
        self.head = cm.YesNoHead(self.lm, self.yes_no)
        return lora_parameters(self.lm)

    def training_tokens(self, encoded) -> int:
        """Prompt tokens one training step processes: epochs x the pairs' prompt lengths."""
        return int(self.settings.epochs) * sum(len(e.ids) for e in encoded)

    def run_training(self, params, lr_groups, builder, loss: str, seed: int, vectors=None) -> dict:
        """AdamW over the training pairs (shuffled by `seed`), `epochs` passes, with the learning-rate schedule
        of the settings (warmup, then constant / linear / cosine decay over the stage's epochs x batches per
        epoch steps); `loss` one of model.LOSSES. With `select_on_valid`, the validation AUC is computed every
        `eval_every` steps (0: each epoch's end) or at `evaluations` steps spread over the stage, the stage
        stops after `patience` evaluations without a gain (0: never), and the trained parameters end at their
        best state. Returns the loss curve, the schedule and the selection (curve, best step, stopped early)."""
        import torch

        from methods.llm.train import (
            epoch_batches,
            resolve_warmup,
            scheduler_factory,
            spread_steps,
            train_loop,
        )

        s = self.settings
        # the causal-LM loss trains no score of its own: validation scores with the method's scoring
        scoring = s.scoring if loss == "lm" else loss
        selector = ValidSelection(self, params, builder, scoring, vectors) if s.select_on_valid else None
        for p in params:
            p.requires_grad_(True)
        data = self.train_data
        encoded = [builder.encode(h, i) for h, i in zip(data.histories, data.frame["item"])]
        labels = torch.as_tensor(data.frame["label"].to_numpy().copy(), device=self.device)
        users, items = data.frame["user"].to_numpy(), data.frame["item"].to_numpy()
        batches = epoch_batches(len(encoded), s.batch_size, s.epochs, np.random.default_rng(seed))
        torch.manual_seed(seed)

        def batch_loss(idx):
            uv, iv = (vectors or (lambda *a: (None, None)))(users[idx], items[idx], [data.histories[i] for i in idx])
            batch = [encoded[i] for i in idx]
            return (cm.pair_loss(self.head, batch, labels[idx], loss, self.pad_id, self.device, uv, iv),
                    sum(len(e.ids) for e in batch))

        # optimizer steps: epoch_batches yields ceil(n / batch_size) batches a pass (the last one ragged), one
        # step each (no accumulation); the decay reaches 0 at the last of them
        per_epoch = -(-len(encoded) // s.batch_size)
        total = s.epochs * per_epoch
        warmup = resolve_warmup(total, s.warmup_steps, s.warmup_ratio)
        planned = spread_steps(total, s.evaluations) if selector and s.evaluations else []
        eval_every = 0 if planned or not selector else (s.eval_every or per_epoch)
        base_rates = [float(g["lr"]) for g in lr_groups]  # before the optimizer's schedule rewrites its groups
        result = train_loop(lr_groups, lambda groups: torch.optim.AdamW(groups, weight_decay=s.weight_decay),
                            batches, batch_loss, model=self.lm, device=self.device, desc=f"{self.name} LoRA",
                            make_scheduler=scheduler_factory(warmup, total, s.lr_schedule),
                            eval_every=eval_every, eval_steps=set(planned) if planned else None,
                            evaluate=selector.evaluate if selector else None,
                            should_stop=selector.should_stop if selector and s.patience else None,
                            autocast_dtype=torch.bfloat16 if s.precision == "bf16" else None,
                            progress=self.options.progress)
        if selector is not None:
            selector.finish(result.steps, result.stopped_early)
        for p in params:
            p.requires_grad_(False)
        losses = result.losses
        info = {"train_seconds": result.seconds, "steps": len(losses), "loss": loss,
                # prompt tokens of the steps run (epochs x the pairs' prompt lengths unless the stage stopped early)
                "tokens": int(sum(result.step_tokens)),
                "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
                "losses": losses,
                "schedule": {"kind": s.lr_schedule, "warmup_steps": warmup, "total_steps": total,
                             "learning_rates": base_rates},
                "stopped_early": bool(result.stopped_early)}
        if selector is not None:
            info["selection"] = selector.summary() | {
                "planned_evaluations": planned or sorted({*range(eval_every, total + 1, eval_every), total}),
                "patience": int(s.patience)}
        return info

    def cached_adapter(self, folder: Path, train: Callable[[], dict], memo_dir: Path | str) -> dict:
        """The training info of the adapter cached in `folder` (+ "cached"): loaded into the LLM when the
        folder is there and verifies, else trained by `train()` (which returns the info) and saved."""
        from bench.cache import cached_artifact
        from methods.llm.lora import load_adapter, save_adapter

        trained: dict = {}

        def build(tmp: Path) -> None:
            trained.update(train())
            save_adapter(self.peft, tmp / "adapter.pt")
            (tmp / "info.json").write_text(json.dumps(trained))

        folder, built = cached_artifact(folder, build, memo_dir=memo_dir, check=adapter_problem)
        if built:
            return trained | {"cached": False}
        load_adapter(self.peft, folder / "adapter.pt", self.device)
        return json.loads((folder / "info.json").read_text()) | {"cached": True}


def adapter_problem(folder: Path) -> str | None:
    """None when a LoRA cache folder holds an adapter and a readable info.json."""
    if not (folder / "adapter.pt").is_file():
        return "adapter.pt is missing"
    try:
        json.loads((folder / "info.json").read_text())
    except (OSError, ValueError) as err:
        return f"info.json does not load ({err})"
    return None


class ValidSelection(BestState):
    """Keeps the best state (by validation AUC) of the parameters a training step tunes: `BestState` (mode
    "max", the settings' `patience`) over the AUC of validation pairs.

    The validation pairs are the split's valid part with their saved histories (`valid_pairs` > 0: a sample
    drawn with the run seed), scored with the step's own prompt, vectors and scoring."""

    def __init__(self, method, params, builder, scoring: str, vectors=None):
        from bench.eval.pointwise import histories

        super().__init__(params, self.auc, mode="max", patience=int(method.settings.patience), metric="valid_auc")
        self.method, self.builder, self.scoring = method, builder, scoring
        self.vectors = vectors or (lambda *a: (None, None))
        data = histories(method.data.split, "valid")
        n = int(method.settings.valid_pairs)
        rows = np.arange(len(data.frame))
        if 0 < n < len(rows):
            rows = np.sort(np.random.default_rng(method.run_seed).choice(len(rows), size=n, replace=False))
        self.frame = data.frame.iloc[rows].reset_index(drop=True)
        self.hists = [data.histories[r] for r in rows]
        self.encoded = [builder.encode(h, i) for h, i in zip(self.hists, self.frame["item"])]

    def auc(self) -> float:
        import torch

        from bench.eval.pointwise import auc

        m = self.method
        m.lm.eval()
        users, items = self.frame["user"].to_numpy(), self.frame["item"].to_numpy()
        scores = []
        with torch.no_grad(), m.autocast():
            for b in range(0, len(self.encoded), m.options.llm_eval_batch_size):
                sl = slice(b, b + m.options.llm_eval_batch_size)
                uv, iv = self.vectors(users[sl], items[sl], self.hists[sl])
                logits = cm.full_logits(m.head, self.encoded[sl], uv, iv, m.pad_id, m.device)
                scores.append(cm.probabilities(logits.float(), self.scoring).cpu().numpy())
        value = auc(self.frame["label"].to_numpy(), np.concatenate(scores) if scores else np.zeros(0))
        return float(value) if value == value else 0.5  # one class only: uninformative

    def summary(self) -> dict:
        """The selection as recorded: the curve (step, valid_auc), the best step and its AUC, `evaluations` (how
        many ran), `early_stopped` (the best state is not the last step's: what bench/report/convergence.py reads
        as converged) and `stopped_early` (the patience rule ended the stage before its last step)."""
        base = super().summary()
        return {"metric": "valid_auc", "n_pairs": int(len(self.frame)), "best_step": self.best_step,
                "best_valid_auc": self.best_value,
                "curve": [{"step": c["step"], "valid_auc": c["value"]} for c in self.curve],
                "evaluations": base["evaluations"], "early_stopped": base["early_stopped"],
                "stopped_early": self.stopped_early}
