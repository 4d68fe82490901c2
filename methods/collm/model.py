"""CoLLM / TALLRec (paper 002) model helpers: prompt templates with ID placeholders, tokenised pairs, the
Yes/No head, placeholder splicing, and scoring with a per-prefix key/value cache.

A prompt is rendered as one string and tokenised once (BOS first where the tokenizer has one); the ID
placeholders are found by character offsets and each becomes one token whose embedding is replaced. The
prefix is every token that ends before the first target-dependent placeholder (the target title, the
target ID, or the user ID when the collaborative user vector depends on the target, as DIN's does): a
user's test pairs share it, so its keys / values are computed once and each candidate only costs its
short suffix.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

import numpy as np

from bench.errors import BenchError

HISTORY, USER, TITLE, ITEM = "<HisItemTitleList>", "<UserID>", "<TargetItemTitle>", "<TargetItemID>"
PLACEHOLDERS = (HISTORY, USER, TITLE, ITEM)
COLLM_PROMPT = ('#Question: A user has given high ratings to the following movies: <HisItemTitleList>. '
                "Additionally, we have information about the user's preferences encoded in the feature "
                "<UserID>. Using all available information, make a prediction about whether the user would "
                'enjoy the movie titled <TargetItemTitle> with the feature <TargetItemID>? Answer with "Yes" '
                'or "No". #Answer:')
# stage 1 / TALLRec: the same prompt with the ID parts removed
TEXT_PROMPT = ('#Question: A user has given high ratings to the following movies: <HisItemTitleList>. '
               'Using all available information, make a prediction about whether the user would enjoy the '
               'movie titled <TargetItemTitle>? Answer with "Yes" or "No". #Answer:')
# the rerankers' (methods/collm/rerank.py): the same question with the target last, so that a user's candidates
# share everything before the title (one cached prefix) and each costs only its title and "? #Answer:"
TEXT_RERANK_PROMPT = ('#Question: A user has given high ratings to the following movies: <HisItemTitleList>. '
                      'Using all available information, answer with "Yes" or "No": would the user enjoy the movie '
                      'titled <TargetItemTitle>? #Answer:')
COLLM_RERANK_PROMPT = ('#Question: A user has given high ratings to the following movies: <HisItemTitleList>. '
                       "Additionally, we have information about the user's preferences encoded in the feature "
                       '<UserID>. Using all available information, answer with "Yes" or "No": would the user enjoy '
                       'the movie titled <TargetItemTitle> with the feature <TargetItemID>? #Answer:')


class PromptTemplateError(BenchError):
    """A prompt template lacks a placeholder its method needs."""


class ContextLengthError(BenchError):
    """A prompt (history + template) does not fit the model's context."""


class AnswerTokenError(BenchError):
    """The tokenizer has no single token for an answer word."""


def parse_template(template: str, required: tuple[str, ...]) -> list[str]:
    """Segments: literal text and placeholders, in order; every required placeholder exactly once."""
    for name in required:
        if template.count(name) != 1:
            raise PromptTemplateError(f"prompt template must contain {name} exactly once (found "
                                      f"{template.count(name)}): {template!r}")
    unknown = sorted(set(re.findall(r"<[A-Za-z]+>", template)) - set(PLACEHOLDERS))
    if unknown:
        raise PromptTemplateError(f"prompt template has unknown placeholders {unknown} (valid: "
                                  f"{', '.join(PLACEHOLDERS)}): {template!r}")
    extra = [p for p in (USER, ITEM) if p in template and p not in required]
    if extra:
        raise PromptTemplateError(f"prompt template has {extra} but this method has no ID vectors: {template!r}")
    parts = re.split("(" + "|".join(re.escape(p) for p in PLACEHOLDERS) + ")", template)
    return [p for p in parts if p]


def answer_token_ids(tokenizer, words) -> list[int]:
    """The token id of each answer word: each must be one token of the tokenizer, and the ids distinct (the same
    token for Yes and No would score every pair alike)."""
    ids = []
    for word in words:
        pieces = tokenizer.encode(word, add_special_tokens=False)
        if len(pieces) != 1:
            raise AnswerTokenError(f"answer {word!r} is not a single token of this tokenizer (it splits into "
                                   f"{tokenizer.convert_ids_to_tokens(pieces)}); set answer_tokens")
        ids.append(pieces[0])
    if len(set(ids)) != len(ids):
        raise AnswerTokenError(f"answers {list(words)!r} are the same token of this tokenizer (id {ids[0]}); "
                               "set answer_tokens to two different single tokens")
    return ids


def check_longest_prompt(tokenizer, builder: PromptBuilder, titles: dict, length: int, limit: int) -> None:
    """The longest prompt any scored pair can have (its `length` history items the longest titles, the target the
    longest title) must fit the context `limit`: ContextLengthError otherwise."""
    sizes = {item: len(tokenizer(title, add_special_tokens=False)["input_ids"]) for item, title in titles.items()}
    longest = sorted(sizes, key=lambda item: (-sizes[item], item))
    if longest:
        n_tokens = len(builder.encode(tuple(longest[:length]), longest[0]).ids)
        if n_tokens > limit:
            raise ContextLengthError(
                f"scored pairs: the longest prompt a pair can have ({length} history items and the target, "
                f"all with the longest titles) has {n_tokens} tokens, more than the model's context of "
                f"{limit}; shorten history_length or the template")


@dataclass
class Encoded:
    """One pair's prompt: token ids, placeholder positions (-1 = none), length of the shared prefix."""

    ids: list[int]
    user_pos: int
    item_pos: int
    prefix_len: int


class PromptBuilder:
    """Tokenises pairs: history titles quoted and joined by ', ', target title quoted.

    The prompt is rendered as one string and tokenised once (the tokenizer's BOS first, where it has one), so
    its tokens are the ones the model would see for that text; each ID placeholder is one token (with the
    space before it), whose embedding is replaced; the shared prefix is found by the tokens' offsets."""

    def __init__(self, tokenizer, template: str, required: tuple[str, ...], titles: dict,
                 target_dependent_user: bool = False):
        self.tokenizer, self.titles = tokenizer, titles
        if not getattr(tokenizer, "is_fast", False):
            raise BenchError(f"the prompt needs a fast tokenizer (character offsets); {type(tokenizer).__name__} "
                             "is not one: point base_model at a model folder with tokenizer.json")
        self.segments = parse_template(template, required)
        self.target_dependent = {TITLE, ITEM} | ({USER} if target_dependent_user else set())
        # a placeholder's id is never looked up (its embedding is replaced); any valid id will do
        self.placeholder_id = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else 0
        self.bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        # a private copy that knows each ID placeholder as one token (taking the space before it, which
        # belongs to no word), so the text around it tokenises as the model's own tokenizer would
        from tokenizers import AddedToken

        self.marked = copy.deepcopy(tokenizer)
        self.marked.add_tokens([AddedToken(p, lstrip=True, rstrip=False, normalized=False, special=True)
                                for p in (USER, ITEM)], special_tokens=True)
        self.markers = {self.marked.convert_tokens_to_ids(p): p for p in (USER, ITEM)}

    def title(self, item) -> str:
        return '"' + str(self.titles.get(item, f"item {item}")) + '"'

    def render(self, history, item) -> tuple[str, dict[str, tuple[int, int]]]:
        """The prompt text and each placeholder's character span in it."""
        text, spans = "", {}
        for seg in self.segments:
            start = len(text)
            if seg == HISTORY:
                text += ", ".join(self.title(h) for h in history)
            elif seg == TITLE:
                text += self.title(item)
            else:  # literal text, or an ID placeholder kept as written (its tokens become one placeholder)
                text += seg
            spans.setdefault(seg, (start, len(text)))
        return text, spans

    def encode(self, history, item) -> Encoded:
        text, spans = self.render(history, item)
        enc = self.marked(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
        positions = {}
        for k, token in enumerate(ids):
            name = self.markers.get(token)
            if name is not None:  # the placeholder's token, located where its span is
                positions[name] = k
                ids[k] = self.placeholder_id
        # the shared prefix: every token that ends before the first target-dependent placeholder starts
        boundary = min((spans[s][0] for s in self.target_dependent if s in spans), default=len(text))
        prefix_len = sum(1 for _, b in offsets if b <= boundary)
        n = len(self.bos)
        return Encoded(self.bos + ids, positions.get(USER, -1 - n) + n, positions.get(ITEM, -1 - n) + n,
                       min(prefix_len, len(ids) - 1) + n)


def check_lengths(encoded: list[Encoded], users, limit: int, where: str) -> int:
    """The longest prompt; a prompt over `limit` tokens is an error naming its user."""
    lengths = np.array([len(e.ids) for e in encoded])
    if len(lengths) and lengths.max() > limit:
        row = int(lengths.argmax())
        raise ContextLengthError(f"{where}: the prompt of user {users[row]!r} has {lengths[row]} tokens, more "
                                 f"than the model's context of {limit}; shorten history_length or the template")
    return int(lengths.max()) if len(lengths) else 0


def splice(embeds, rows, cols, vectors):
    """`embeds` with [rows[k], cols[k]] replaced by vectors[k] (a new tensor; gradients reach `vectors`)."""
    if len(rows) == 0:
        return embeds
    out = embeds.clone()
    out[rows, cols] = vectors.to(out.dtype)
    return out


class YesNoHead:
    """Yes / No logits from the decoder's last hidden state (only the two rows of the LM head); `vocab_logits`
    gives the whole vocabulary's at the same positions (the causal-LM loss's normaliser)."""

    def __init__(self, lm, yes_no: list[int]):
        self.lm, self.decoder = lm, lm.get_decoder()
        self.ids = yes_no

    def logits(self, hidden):
        head = self.lm.get_output_embeddings()
        weight = head.weight[self.ids]
        out = hidden @ weight.T
        if getattr(head, "bias", None) is not None:
            out = out + head.bias[self.ids]
        return out  # [..., 2]: yes, no

    def vocab_logits(self, hidden):
        """Logits over the whole vocabulary [..., V]: the LM head's full matrix at the given hidden states only
        (one answer position per pair, not every position of the prompt as the model's forward would)."""
        import torch.nn.functional as F

        head = self.lm.get_output_embeddings()
        return F.linear(hidden, head.weight, getattr(head, "bias", None))

    def embed(self, ids):
        return self.lm.get_input_embeddings()(ids)


def batch_tensors(encoded: list[Encoded], start: int, pad_id: int, device: str):
    """Right-padded ids [B, T] from position `start` on, attention mask, index of each last real token."""
    import torch

    seqs = [e.ids[start:] for e in encoded]
    length = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), length), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, :len(seq)] = torch.as_tensor(seq)
        mask[row, :len(seq)] = 1
    last = torch.as_tensor([len(s) - 1 for s in seqs])
    return ids.to(device), mask.to(device), last.to(device)


def placeholder_index(encoded: list[Encoded], attr: str, offset: int = 0):
    rows = [r for r, e in enumerate(encoded) if getattr(e, attr) >= 0]
    cols = [getattr(encoded[r], attr) - offset for r in rows]
    return rows, cols


def full_logits(head: YesNoHead, encoded: list[Encoded], user_vecs, item_vecs, pad_id: int, device: str):
    """Yes/No logits [B, 2] of whole prompts (the training path, and the reference for the cached one)."""
    return head.logits(answer_hidden(head, encoded, user_vecs, item_vecs, pad_id, device))


def answer_hidden(head: YesNoHead, encoded: list[Encoded], user_vecs, item_vecs, pad_id: int, device: str):
    """The decoder's last hidden state [B, d] at each prompt's answer position (its last token: the one whose
    next-token distribution holds the answer), placeholders spliced."""
    import torch

    ids, mask, last = batch_tensors(encoded, 0, pad_id, device)
    embeds = head.embed(ids)
    if user_vecs is not None:
        rows, cols = placeholder_index(encoded, "user_pos")
        embeds = splice(embeds, rows, cols, user_vecs[rows])
    if item_vecs is not None:
        rows, cols = placeholder_index(encoded, "item_pos")
        embeds = splice(embeds, rows, cols, item_vecs[rows])
    hidden = head.decoder(inputs_embeds=embeds, attention_mask=mask, use_cache=False).last_hidden_state
    return hidden[torch.arange(len(encoded), device=hidden.device), last]


def cached_logits(head: YesNoHead, encoded: list[Encoded], user_vecs, item_vecs, pad_id: int, device: str,
                  batch_size: int):
    """Like `full_logits` (no gradients), but pairs with one prefix share a single prefix pass: its
    key/value cache is repeated over each batch of suffixes (same batch size as the full path)."""
    import torch

    out = torch.zeros((len(encoded), 2))
    groups: dict[tuple, list[int]] = {}
    for row, e in enumerate(encoded):
        key = tuple(e.ids[:e.prefix_len])
        if e.user_pos >= 0 and e.user_pos < e.prefix_len:  # the user vector is part of the prefix
            key = (key, row if user_vecs is None else user_vecs[row].detach().float().cpu().numpy().tobytes())
        groups.setdefault(key, []).append(row)
    with torch.no_grad():
        for rows in groups.values():
            first = encoded[rows[0]]
            p = first.prefix_len
            prefix = head.embed(torch.as_tensor([first.ids[:p]], device=device))
            if 0 <= first.user_pos < p and user_vecs is not None:
                prefix = splice(prefix, [0], [first.user_pos], user_vecs[rows[0]][None])
            cache = head.decoder(inputs_embeds=prefix, use_cache=True).past_key_values
            for b in range(0, len(rows), batch_size):
                chunk = rows[b:b + batch_size]
                enc = [encoded[r] for r in chunk]
                ids, mask, last = batch_tensors(enc, p, pad_id, device)
                embeds = head.embed(ids)
                for attr, vecs in (("user_pos", user_vecs), ("item_pos", item_vecs)):
                    if vecs is None:
                        continue
                    sel = [k for k, e in enumerate(enc) if getattr(e, attr) >= p]
                    if sel:
                        cols = [getattr(enc[k], attr) - p for k in sel]
                        embeds = splice(embeds, sel, cols, vecs[[chunk[k] for k in sel]])
                kv = copy.deepcopy(cache)
                kv.batch_repeat_interleave(len(chunk))
                full_mask = torch.cat([torch.ones((len(chunk), p), dtype=mask.dtype, device=device), mask], 1)
                positions = (p + torch.arange(ids.shape[1], device=device))[None].expand(len(chunk), -1)
                hidden = head.decoder(inputs_embeds=embeds, attention_mask=full_mask, past_key_values=kv,
                                      position_ids=positions, use_cache=True).last_hidden_state
                out[chunk] = head.logits(hidden[torch.arange(len(chunk), device=hidden.device), last]).float().cpu()
    return out


def probabilities(logits, scoring: str):
    """P(Yes): sigmoid of the Yes logit (CoLLM) or softmax over Yes / No (TALLRec)."""
    import torch

    if scoring == "yes_logit":
        return torch.sigmoid(logits[:, 0])
    return torch.softmax(logits, -1)[:, 0]


LOSSES = ("yes_logit", "yes_no_softmax", "lm")


def loss_fn(logits, labels, scoring: str):
    """The loss of Yes / No logits [B, 2]: BCE on the Yes logit (CoLLM) or the two-way softmax's cross-entropy."""
    import torch.nn.functional as F

    if scoring == "yes_logit":
        return F.binary_cross_entropy_with_logits(logits[:, 0], labels.float())
    return F.cross_entropy(logits, (1 - labels).long())  # class 0 = Yes


def lm_loss(vocab_logits, labels, yes_no: list[int]):
    """TALLRec's loss (its code, finetune_rec.py: HF Trainer's causal-LM loss): the cross-entropy of the
    response over the whole vocabulary [B, V] at the answer position, of the label's answer token (" Yes" for 1,
    " No" for 0), i.e. log-sum-exp of every logit minus the answer's; the prompt's tokens are masked (-100, its
    train_on_inputs=False; its shell scripts pass --train_on_inputs, which trains them too). The response here
    is that one answer token: TALLRec's code also trains the EOS after it, which this does not (the answer
    position is all that scoring reads)."""
    import torch
    import torch.nn.functional as F

    target = torch.where(labels.bool(), yes_no[0], yes_no[1]).to(vocab_logits.device)
    return F.cross_entropy(vocab_logits.float(), target.long())


def pair_loss(head: YesNoHead, encoded: list[Encoded], labels, loss: str, pad_id: int, device: str,
              user_vecs=None, item_vecs=None):
    """A training batch's loss (`loss` one of LOSSES) of whole prompts with their placeholders spliced."""
    hidden = answer_hidden(head, encoded, user_vecs, item_vecs, pad_id, device)
    if loss == "lm":
        return lm_loss(head.vocab_logits(hidden), labels, head.ids)
    return loss_fn(head.logits(hidden), labels, loss)
