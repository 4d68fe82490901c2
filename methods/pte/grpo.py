"""PtE's optional GRPO fine-tuning of the profile generator (Sec. 4.2, Eq. 12) through peft LoRA.

Eq. 12 maximises E_u[sum_k log sigma(R(p_k) - mean_j R(p_j))] over the generator. R is not differentiable
in the generator's weights (it scores sampled text), so the objective is optimised by the policy gradient
with the group as baseline (GRPO's on-policy step, ratio 1, no clipping needed):
    f_k = log sigma(R_k - R_bar),  A_k = f_k - mean_j f_j,
    loss = - mean_u mean_k A_k * mean_t log pi(p_k,t | prompt, p_k,<t).
Off by default (CPU); `grpo_steps > 0` turns it on. The paper tunes the item side by "an analogous
formulation": `grpo_items` adds item groups (item prompts, item rewards: history = the encodings of the
item's users, neighbours = co-interacted items) to every step, and one LoRA learns both, since the same
generator then samples the user and the item candidates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.hashing import derive_seed, sha256_hex
from methods.llm.generate import ChatGenerator, Sampling
from methods.pte.generate import Request

GRPO_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")  # LoRA on every attention projection


def group_relative_advantages(rewards):
    """[U, K] rewards -> [U, K] A_k = log sigma(R_k - R_bar) - mean_j log sigma(R_j - R_bar)."""
    import torch

    rewards = torch.as_tensor(rewards, dtype=torch.float32)
    f = torch.nn.functional.logsigmoid(rewards - rewards.mean(dim=1, keepdim=True))
    return f - f.mean(dim=1, keepdim=True)


def completion_logprobs(model, tokenizer, chat_texts: list[str], completions: list[str]):
    """Mean per-token log-probability of each completion given its chat prompt (differentiable)."""
    import torch

    ids, labels = [], []
    for prompt, completion in zip(chat_texts, completions):
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        c = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids.append(p + c)
        labels.append([-100] * len(p) + c)
    width = max(len(x) for x in ids)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids])
    attention = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
    target = torch.tensor([x + [-100] * (width - len(x)) for x in labels])
    logits = model(input_ids=input_ids.to(model.device), attention_mask=attention.to(model.device)).logits
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    target = target[:, 1:].to(logits.device)
    mask = target != -100
    token_logp = logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask
    return token_logp.sum(1) / mask.sum(1).clamp(min=1)


def grpo_loss(logprobs, rewards):
    """Eq. 12 as a policy-gradient loss: logprobs [U, K] (differentiable), rewards [U, K]."""
    advantages = group_relative_advantages(rewards).to(logprobs.device)
    return -(advantages * logprobs).mean()


def group_loss(model, tokenizer, chat_texts: list[list[str]], completions: list[list[str]], rewards):
    """The GRPO loss of U groups of K (prompt, completion) pairs with their rewards [U, K]."""
    flat_prompts = [p for group in chat_texts for p in group]
    flat = [c for group in completions for c in group]
    logp = completion_logprobs(model, tokenizer, flat_prompts, flat).view(len(completions), -1)
    return grpo_loss(logp, rewards)


class LoRAChatGenerator(ChatGenerator):
    """A ChatGenerator over a LoRA-wrapped model; its fingerprint adds the adapter weights' hash."""

    def __init__(self, base: ChatGenerator, model, tokenizer, tag: str):
        super().__init__(base.model_dir, base.device, base.cache_dir, model=model, tokenizer=tokenizer)
        self._fingerprint = sha256_hex(f"{base.fingerprint()}|{tag}")


@dataclass
class GRPOGroup:
    """One side of the GRPO objective: the entities whose profiles are sampled and rewarded (Eq. 9)."""

    kind: str  # "user" | "item"
    template: str  # the prompt template the profile stage used for this side
    prompts: dict[str, str]  # entity -> its profile-stage prompt
    history: dict[str, np.ndarray]  # entity -> [n, d] vectors of the collaborative reward
    neighbours: dict[str, np.ndarray]  # entity -> [m, d] current encodings of its neighbours (distinctiveness)

    @property
    def seed_tag(self) -> str:
        return "grpo" if self.kind == "user" else f"grpo-{self.kind}"


class GRPOFineTune:
    """Callable the profile stage runs before candidate sampling: returns the fine-tuned generator."""

    def __init__(self, steps: int, users_per_step: int, group_size: int, learning_rate: float, lora_r: int,
                 lora_alpha: int, seed: int):
        self.steps, self.users_per_step, self.group_size = steps, users_per_step, group_size
        self.learning_rate, self.lora_r, self.lora_alpha, self.seed = learning_rate, lora_r, lora_alpha, seed
        self.info: dict[str, Any] = {}

    def __call__(self, stage, groups: list[GRPOGroup]):
        import torch

        from methods.llm.lora import add_lora, lora_config, lora_digest
        from methods.llm.train import train_loop
        from methods.pte.stage import collab_reward, dist_reward, total_reward

        base: ChatGenerator = stage.generator
        model, tokenizer = base.load()
        torch.manual_seed(self.seed)  # the adapter's initialisation continues from this global state
        model = add_lora(model, lora_config(r=self.lora_r, alpha=self.lora_alpha, dropout=0.0,
                                            target_modules=GRPO_TARGETS, task_type="CAUSAL_LM"))
        generator = LoRAChatGenerator(base, model, tokenizer, "grpo-step0")
        rng = np.random.default_rng(self.seed)
        s = stage.s
        sampling = Sampling(s.max_new_tokens, s.temperature, s.top_p, s.repetition_penalty)
        rewards_seen: dict[str, list[float]] = {g.kind: [] for g in groups}

        def sample(group: GRPOGroup, step: int):
            keys = sorted(group.prompts)
            batch = rng.choice(keys, min(self.users_per_step, len(keys)), replace=False).tolist()
            prompts, completions, rewards = [], [], []
            for e in batch:
                reqs = [Request(e, group.template, group.prompts[e],
                                derive_seed(self.seed, group.seed_tag, step, e, k), sampling)
                        for k in range(self.group_size)]
                outs = generator.generate(stage.prompts.system, [r.prompt for r in reqs], [r.seed for r in reqs],
                                          sampling)
                texts = [t for t, _ in outs]
                vec = stage.encode(texts, f"pte-{group.kind}")
                nb_vec = group.neighbours.get(e)
                if nb_vec is None or len(nb_vec) == 0:
                    nb_vec = np.zeros((0, vec.shape[1]))
                reward = total_reward(collab_reward(vec, group.history[e]), dist_reward(vec, nb_vec),
                                      s.lambda_collab, s.lambda_dist)
                rewards.append(reward)
                prompts.append(generator.chat_texts(stage.prompts.system, [r.prompt for r in reqs]))
                completions.append(texts)
            rewards_seen[group.kind].append(float(np.mean(rewards)))  # this step's mean reward (on-policy)
            return prompts, completions, np.array(rewards)

        def batches():
            """On-policy batches: each step's completions are sampled from the adapter as trained so far."""
            for step in range(self.steps):
                model.eval()
                yield [sample(group, step) for group in groups]

        def loss(batch):
            return sum(group_loss(model, tokenizer, *part) for part in batch)

        params = [p for p in model.parameters() if p.requires_grad]
        result = train_loop(params, lambda ps: torch.optim.AdamW(ps, lr=self.learning_rate), batches(), loss,
                            model=model, device=base.device, desc="PtE GRPO")
        digest = lora_digest(model)
        self.info = {"steps": self.steps, "kinds": [g.kind for g in groups], "losses": result.losses,
                     "mean_reward_per_step": rewards_seen, "lora_hash": digest[:16]}
        return LoRAChatGenerator(base, model, tokenizer, digest)
