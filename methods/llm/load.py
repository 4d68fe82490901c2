"""One way to load a local LLM folder: its tokenizer and its model, from local files only (nothing is ever
downloaded), in a given dtype (float32 by default: training keeps fp32 master weights and CPU runs stay
bit-reproducible), on a given device, with a given attention implementation.

Model folders come from a user setting or from `bench.data.assets` (which converts the embedded GGUF asset
to a plain folder once); either way every method loads them here.
"""

from __future__ import annotations

from pathlib import Path

from bench.errors import BenchError, UnknownChoiceError

ATTN_IMPLEMENTATIONS = ("sdpa", "eager")  # flash-attention kernels ignore the float masks LLM2Rec passes


def cuda_devices(device: str) -> list[int]:
    """The CUDA devices whose random state `torch.random.fork_rng` must also keep (none on the CPU)."""
    import torch

    return [torch.device(device).index or 0] if str(device).startswith("cuda") else []


def load_tokenizer(model_dir: Path | str, padding_side: str = "right", require_eos: bool = True,
                   require_chat_template: bool = False):
    """The folder's tokenizer with a pad token (eos, else unk, when it has none) and `padding_side`.

    Right padding keeps real tokens at positions 0..n-1 (training, scoring); generation pads on the left so
    that every row continues at the same position. `require_eos`: targets and completions end with EOS;
    `require_chat_template`: the prompts are chats (an instruct model)."""
    from transformers import AutoTokenizer

    from bench.encoders import with_pad_token

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    if require_chat_template and not tokenizer.chat_template:
        raise BenchError(f"{model_dir}: tokenizer has no chat template (an instruct model is needed)")
    with_pad_token(tokenizer, str(model_dir))
    if require_eos and tokenizer.eos_token_id is None:
        raise BenchError(f"{model_dir}: tokenizer has no EOS token (targets are ended with one)")
    tokenizer.padding_side = padding_side
    return tokenizer


def load_model(model_dir: Path | str, device: str = "cpu", attn_implementation: str | None = "sdpa",
               dtype: str = "float32", head: bool = True, use_cache: bool | None = None):
    """The folder's model on `device` (in eval mode, as transformers returns it).

    `head`: AutoModelForCausalLM (with the LM head), else AutoModel (the bare decoder, for embeddings);
    `attn_implementation` None keeps transformers' default; `use_cache` False for training (no key/value
    cache is kept), None leaves the config as saved (generation uses it)."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    from bench.encoders import no_hub_kernels

    options = no_hub_kernels()
    if attn_implementation is not None:
        if attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise UnknownChoiceError("attn_implementation", attn_implementation, ATTN_IMPLEMENTATIONS)
        options["attn_implementation"] = attn_implementation
    cls = AutoModelForCausalLM if head else AutoModel
    model = cls.from_pretrained(str(model_dir), local_files_only=True, dtype=getattr(torch, dtype), **options)
    if use_cache is not None:
        model.config.use_cache = use_cache
    return model.to(device)
