"""One chat-generation interface: a local instruct model answers batches of chat prompts (system + user
turn, the tokenizer's chat template, left padding), greedily or by sampling with one seed per row.

Sampling draws each row's tokens from its own torch.Generator (`seeded_sampler`) and then decodes greedily
over the one token left finite, so a row's text depends on its prompt and seed only, never on what else is
in its batch: batching is a speed setting, not a result setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class Sampling:
    """Decoding settings of one request; temperature 0 means greedy."""

    max_new_tokens: int = 32
    temperature: float = 0.0
    top_p: float = 1.0
    repetition_penalty: float = 1.2

    def as_dict(self) -> dict[str, Any]:
        return {"max_new_tokens": self.max_new_tokens, "temperature": self.temperature, "top_p": self.top_p,
                "repetition_penalty": self.repetition_penalty}


class Generator(Protocol):
    """Anything that answers chat prompts: `generate(system, prompts, seeds, sampling)` -> [(text, tokens)]."""

    def fingerprint(self) -> str: ...

    def generate(self, system: str, prompts: list[str], seeds: list[int],
                 sampling: Sampling) -> list[tuple[str, int]]: ...


def seeded_sampler(seeds: list[int], temperature: float, top_p: float):
    """A logits processor that samples each row with its own torch.Generator (seeded per row) and leaves
    only the chosen token finite, so greedy decoding emits it: rows are independent of batching."""
    import torch
    from transformers import LogitsProcessor

    class _SeededSampler(LogitsProcessor):
        def __init__(self):
            self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]

        def __call__(self, input_ids, scores):
            probs = torch.softmax(scores.float() / temperature, dim=-1)
            if top_p < 1.0:
                sorted_p, order = torch.sort(probs, descending=True, dim=-1)
                drop = sorted_p.cumsum(-1) - sorted_p > top_p
                sorted_p = sorted_p.masked_fill(drop, 0.0)
                probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
            out = torch.full_like(scores, -float("inf"))
            for row, gen in enumerate(self.generators):
                token = torch.multinomial(probs[row].cpu(), 1, generator=gen).item()
                out[row, token] = 0.0
            return out

    return _SeededSampler()


class ChatGenerator:
    """A local instruct model folder (or an already loaded model + tokenizer, e.g. one with LoRA adapters):
    chat template, left padding, batched `generate` on the given device."""

    def __init__(self, model_dir: Path | str, device: str = "cpu", cache_dir: Path | None = None,
                 model=None, tokenizer=None):
        self.model_dir = Path(model_dir)
        self.device = device
        self.cache_dir = cache_dir
        self._model, self._tokenizer = model, tokenizer
        self._fingerprint: str | None = None
        self.last_prompt_tokens = 0  # prompt tokens of the last batch (cost accounting)

    def fingerprint(self) -> str:
        """sha256 of the model folder's files (what a generated text depends on besides its request)."""
        if self._fingerprint is None:
            from bench.data.assets import files_fingerprint

            self._fingerprint = files_fingerprint(self.model_dir, self.cache_dir)
        return self._fingerprint

    def load(self):
        """(model, tokenizer), loaded once (float32, transformers' default attention, eval mode)."""
        if self._model is None:
            from methods.llm.load import load_model, load_tokenizer

            tokenizer = load_tokenizer(self.model_dir, require_eos=False, require_chat_template=True)
            self._model = load_model(self.model_dir, self.device, attn_implementation=None).eval()
            self._tokenizer = tokenizer
        self._tokenizer.padding_side = "left"  # generation continues every row at the same position
        return self._model, self._tokenizer

    def chat_texts(self, system: str, prompts: list[str]) -> list[str]:
        """Each prompt as a chat (system turn, user turn) rendered by the chat template, ready to answer."""
        _, tokenizer = self.load()
        return [tokenizer.apply_chat_template([{"role": "system", "content": system},
                                               {"role": "user", "content": p}],
                                              tokenize=False, add_generation_prompt=True) for p in prompts]

    def generate(self, system: str, prompts: list[str], seeds: list[int],
                 sampling: Sampling) -> list[tuple[str, int]]:
        """(text, generated tokens incl. the stop token) per prompt, as one batch."""
        import torch

        model, tokenizer = self.load()
        batch = tokenizer(self.chat_texts(system, prompts), return_tensors="pt", padding=True,
                          add_special_tokens=False).to(self.device)
        self.last_prompt_tokens = int(batch["attention_mask"].sum())
        processors = []
        if sampling.temperature > 0:
            from transformers import LogitsProcessorList

            processors = LogitsProcessorList([seeded_sampler(seeds, sampling.temperature, sampling.top_p)])
        with torch.inference_mode():
            out = model.generate(**batch, max_new_tokens=sampling.max_new_tokens, do_sample=False,
                                 repetition_penalty=sampling.repetition_penalty, logits_processor=processors,
                                 pad_token_id=tokenizer.pad_token_id, top_p=None, top_k=None, temperature=None)
        new = out[:, batch["input_ids"].shape[1]:].cpu()
        results = []
        for row in new:
            ids = row.tolist()
            stops = [k for k, i in enumerate(ids) if i in (tokenizer.eos_token_id, tokenizer.pad_token_id)]
            ids = ids[:stops[0] + 1] if stops else ids  # the stop token counts as generated
            results.append((tokenizer.decode(ids, skip_special_tokens=True).strip(), len(ids)))
        return results
