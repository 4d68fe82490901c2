"""One LoRA helper on top of peft: the adapter config (from `LoRASettings` or explicit values), injection
with a seeded initialisation, the trainable LoRA tensors, and the adapter's state dict on disk.

Seeding: `add_lora(..., seed=s)` initialises the adapter from `s` alone inside `torch.random.fork_rng`, so
the process's random state is neither read nor advanced (an adapter cached on disk must not depend on what
ran before it in the process); `seed=None` draws from the global random state as it is, for callers that
seeded it themselves and whose later draws (dropout masks) continue from it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from bench.search import Choice
from methods.llm.load import cuda_devices


class LoRASettings(BaseModel):
    """LoRA rank, scaling, dropout and the projection modules it is added to."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # `bench tune` (bench.search), where the method's settings search `lora` (Nested): the rank
    search_space: ClassVar[dict] = {"r": Choice(values=(4, 8, 16))}

    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")


def lora_config(settings: LoRASettings | None = None, *, r: int | None = None, alpha: int | None = None,
                dropout: float | None = None, target_modules: tuple[str, ...] | list[str] | None = None,
                task_type: str | None = None):
    """A peft LoraConfig (bias "none") from `settings` (default r 8, alpha 16, dropout 0.05 on q_proj /
    v_proj), each explicit value overriding its field."""
    from peft import LoraConfig

    s = settings or LoRASettings()
    return LoraConfig(r=s.r if r is None else r, lora_alpha=s.alpha if alpha is None else alpha,
                      lora_dropout=s.dropout if dropout is None else dropout,
                      target_modules=list(s.target_modules if target_modules is None else target_modules),
                      bias="none", task_type=task_type)


def add_lora(model, config, seed: int | None = None, device: str = "cpu"):
    """Inject LoRA layers into `model`'s modules (in place) and return the peft wrapper.

    `seed`: initialise from it alone (forked random state; `device` names the CUDA state to keep too);
    None: from the global random state as it is."""
    from peft import get_peft_model

    if seed is None:
        return get_peft_model(model, config)
    import torch

    with torch.random.fork_rng(devices=cuda_devices(device)):
        torch.manual_seed(seed)
        return get_peft_model(model, config)


def lora_parameters(model) -> list:
    """The LoRA tensors of a model with adapters injected (what a LoRA fine-tune trains)."""
    return [p for n, p in model.named_parameters() if "lora_" in n]


def lora_digest(model) -> str:
    """sha256 over the LoRA tensors (name and bytes, in name order): identifies a fine-tuned adapter."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if "lora_" in name:
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def save_adapter(peft_model, path: Path | str) -> None:
    """The adapter's state dict (CPU tensors) saved with torch.save."""
    import torch
    from peft import get_peft_model_state_dict

    torch.save({k: v.cpu() for k, v in get_peft_model_state_dict(peft_model).items()}, Path(path))


def load_adapter(peft_model, path: Path | str, device: str = "cpu") -> None:
    """Load a state dict saved by `save_adapter` into `peft_model`'s adapter (tensors only, on `device`)."""
    import torch
    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(peft_model, torch.load(Path(path), map_location=device, weights_only=True))
