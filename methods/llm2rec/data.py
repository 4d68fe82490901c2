"""LLM2Rec (paper 003) training data and losses: CSFT examples and labels, dynamic padding, MNTP masking,
the shifted token loss and the SimCSE (InfoNCE) loss."""

from __future__ import annotations

from collections.abc import Sequence

from bench.errors import BenchError


def build_csft_examples(train_sequences: list[list[str]], max_history: int = 10) -> list[tuple[str, str]]:
    """(input, target) per position t >= 1 of each user's chronological training titles.

    input = the previous <= `max_history` titles joined by ", " (no template); target = title_t + "\\n"
    (EOS is appended at tokenization). The caller passes training interactions only.
    """
    if max_history < 1:
        raise BenchError(f"max_history must be >= 1, got {max_history}")
    examples = []
    for sequence in train_sequences:
        for t in range(1, len(sequence)):
            examples.append((", ".join(sequence[max(0, t - max_history):t]), sequence[t] + "\n"))
    return examples


def build_csft_valid_examples(valid_sequences: Sequence[tuple[Sequence[str], Sequence[str]]],
                              max_history: int = 10) -> list[tuple[str, str]]:
    """CSFT validation examples: for each user's (known titles, validation titles), one (input, target) per
    validation title, built as `build_csft_examples` builds training ones: input = the <= `max_history`
    titles before it (the user's known titles, then any earlier validation titles), target = its title +
    "\\n". A validation title with nothing before it gives no example. Never pass test interactions."""
    if max_history < 1:
        raise BenchError(f"max_history must be >= 1, got {max_history}")
    examples = []
    for known, targets in valid_sequences:
        sequence = [*known, *targets]
        for t in range(max(1, len(known)), len(sequence)):
            examples.append((", ".join(sequence[max(0, t - max_history):t]), sequence[t] + "\n"))
    return examples


def csft_tokenize(tokenizer, examples: Sequence[tuple[str, str]], max_length: int) -> tuple[list, list]:
    """Token ids and labels per example: input tokens labelled -100, target tokens + EOS labelled.

    Over-long examples keep the target (cut to max_length - 1 tokens, then EOS) and the most recent
    part of the input (cut from the left).
    """
    inputs = tokenizer([x for x, _ in examples])["input_ids"]
    targets = tokenizer([y for _, y in examples], add_special_tokens=False)["input_ids"]
    all_ids, all_labels = [], []
    for source, target in zip(inputs, targets):
        target = target[:max_length - 1] + [tokenizer.eos_token_id]
        room = max_length - len(target)
        source = source[len(source) - room:] if len(source) > room else source
        all_ids.append(source + target)
        all_labels.append([-100] * len(source) + target)
    return all_ids, all_labels


def pad_batch(sequences: list[list[int]], pad_value: int):
    """LongTensor [n, longest] right-padded with `pad_value`, and the 0/1 attention mask (dynamic padding)."""
    import torch

    longest = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), longest), pad_value, dtype=torch.long)
    mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, :len(seq)] = 1
    return ids, mask


def csft_collate(tokenizer, examples: Sequence[tuple[str, str]], max_length: int) -> dict:
    """input_ids, attention_mask, labels for a batch of (input, target) examples."""
    ids, labels = csft_tokenize(tokenizer, examples, max_length)
    input_ids, mask = pad_batch(ids, tokenizer.pad_token_id)
    label_ids, _ = pad_batch(labels, -100)
    return {"input_ids": input_ids, "attention_mask": mask, "labels": label_ids}


def mask_token_id(tokenizer, token: str) -> int:
    """Id of the stand-in mask token (must be one token of the vocabulary)."""
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or (token_id == tokenizer.unk_token_id and token != tokenizer.unk_token):
        specials = [t for t in (tokenizer.unk_token, tokenizer.pad_token, tokenizer.eos_token) if t]
        raise BenchError(f"llm2rec mntp: mask_token {token!r} is not a single token of this tokenizer; "
                         f"pick a vocabulary token (e.g. one of {', '.join(map(repr, specials))})")
    return int(token_id)


def mntp_mask(input_ids, attention_mask, mask_id: int, vocab_size: int, probability: float, generator,
              special_ids: Sequence[int] = ()):
    """BERT-style masking for MNTP: (corrupted ids, labels).

    Candidates: non-pad tokens at positions >= 1 that are not special tokens (position 0 has no
    position before it to predict it from). Each is selected with `probability`; a selected token is
    replaced by `mask_id` (80%), a random token (10%) or kept (10%), and labelled with its original id;
    everything else is labelled -100. `generator` is a CPU torch.Generator (masks do not depend on device).
    """
    import torch

    ids = input_ids.cpu()
    candidates = attention_mask.cpu().bool().clone()
    candidates[:, 0] = False
    for special in special_ids:
        candidates &= ids != special
    selected = (torch.rand(ids.shape, generator=generator) < probability) & candidates
    labels = torch.where(selected, ids, torch.full_like(ids, -100))
    draw = torch.rand(ids.shape, generator=generator)
    replace_mask = selected & (draw < 0.8)
    replace_random = selected & (draw >= 0.8) & (draw < 0.9)
    corrupted = ids.clone()
    corrupted[replace_mask] = mask_id
    randoms = torch.randint(vocab_size, ids.shape, generator=generator)
    corrupted[replace_random] = randoms[replace_random]
    return corrupted.to(input_ids.device), labels.to(input_ids.device)


def shifted_token_loss(hidden, labels, head):
    """Cross-entropy of labels[:, i] predicted from hidden[:, i-1] (labels -100 ignored; head on those only)."""
    import torch.nn.functional as F

    h, y = hidden[:, :-1], labels[:, 1:]
    keep = y != -100
    if not keep.any():
        return hidden.sum() * 0.0
    logits = head(h[keep]).float()
    return F.cross_entropy(logits, y[keep])


def info_nce(z1, z2, temperature: float):
    """SimCSE loss: row i of z1 should match row i of z2 among all rows (cosine similarity / temperature)."""
    import torch
    import torch.nn.functional as F

    sim = F.normalize(z1.float(), dim=-1) @ F.normalize(z2.float(), dim=-1).T / temperature
    return F.cross_entropy(sim, torch.arange(sim.shape[0], device=sim.device))


def mntp_texts(which: str, titles: Sequence[str], examples: Sequence[tuple[str, str]]) -> list[str]:
    """MNTP training texts: item titles, CSFT sequences (history + next title), or both."""
    texts: list[str] = []
    if which in ("titles", "both"):
        texts += list(dict.fromkeys(t for t in titles if t))
    if which in ("sequences", "both"):
        texts += [f"{x}, {y.rstrip()}" for x, y in examples]
    return texts
