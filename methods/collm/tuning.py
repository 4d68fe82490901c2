"""CoLLM / TALLRec tuning (paper 002): LoRA injection, the training loop over Yes / No pairs and the disk
cache of step-1 adapters, built on `methods.llm` (LoRA helper, training loop) and `bench.cache`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from methods.collm import model as cm


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

    def run_training(self, params, lr_groups, builder, scoring: str, seed: int, vectors=None) -> dict:
        """AdamW over the training pairs (shuffled by `seed`), `epochs` passes; returns loss curve."""
        import torch

        from methods.llm.train import epoch_batches, train_loop

        s = self.settings
        for p in params:
            p.requires_grad_(True)
        data = self.train_data
        encoded = [builder.encode(h, i) for h, i in zip(data.histories, data.frame["item"])]
        labels = torch.as_tensor(data.frame["label"].to_numpy().copy(), device=self.device)
        users, items = data.frame["user"].to_numpy(), data.frame["item"].to_numpy()
        batches = epoch_batches(len(encoded), s.batch_size, s.epochs, np.random.default_rng(seed))
        torch.manual_seed(seed)

        def loss(idx):
            uv, iv = (vectors or (lambda *a: (None, None)))(users[idx], items[idx], [data.histories[i] for i in idx])
            logits = cm.full_logits(self.head, [encoded[i] for i in idx], uv, iv, self.pad_id, self.device)
            return cm.loss_fn(logits, labels[idx], scoring)

        result = train_loop(lr_groups, lambda groups: torch.optim.AdamW(groups, weight_decay=s.weight_decay),
                            batches, loss, model=self.lm, device=self.device, desc=f"{self.name} LoRA")
        for p in params:
            p.requires_grad_(False)
        losses = result.losses
        return {"train_seconds": result.seconds, "steps": len(losses),
                "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
                "losses": losses}

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
