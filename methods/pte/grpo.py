"""PtE's optional GRPO fine-tuning of the profile generator (Sec. 4.2, Eq. 12) through peft LoRA.

Eq. 12 maximises E_u[sum_k log sigma(R(p_k) - mean_j R(p_j))] over the generator. R is not differentiable
in the generator's weights (it scores sampled text), so the objective is optimised by the policy gradient
with the group as baseline (GRPO's on-policy step, ratio 1, no clipping needed):
    f_k = log sigma(R_k - R_bar),  A_k = f_k - mean_j f_j,
    loss = - mean_u mean_k A_k * mean_t log pi(p_k,t | prompt, p_k,<t).
Off by default (CPU); `grpo_steps > 0` turns it on.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

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
        self._fingerprint = hashlib.sha256(f"{base.fingerprint()}|{tag}".encode()).hexdigest()


class GRPOFineTune:
    """Callable the profile stage runs before candidate sampling: returns the fine-tuned generator."""

    def __init__(self, steps: int, users_per_step: int, group_size: int, learning_rate: float, lora_r: int,
                 lora_alpha: int, seed: int):
        self.steps, self.users_per_step, self.group_size = steps, users_per_step, group_size
        self.learning_rate, self.lora_r, self.lora_alpha, self.seed = learning_rate, lora_r, lora_alpha, seed
        self.info: dict[str, Any] = {}

    def __call__(self, stage, user_prompts: dict[str, str], user_profiles: dict[str, str], raw_item_vectors):
        import torch

        from methods.llm.lora import add_lora, lora_config, lora_digest
        from methods.llm.train import train_loop
        from methods.pte.stage import collab_reward, derive_seed, dist_reward, total_reward

        base: ChatGenerator = stage.generator
        model, tokenizer = base.load()
        torch.manual_seed(self.seed)  # the adapter's initialisation continues from this global state
        model = add_lora(model, lora_config(r=self.lora_r, alpha=self.lora_alpha, dropout=0.0,
                                            target_modules=GRPO_TARGETS, task_type="CAUSAL_LM"))
        generator = LoRAChatGenerator(base, model, tokenizer, "grpo-step0")
        users = sorted(user_prompts)
        current = dict(zip(users, stage.encode([user_profiles[u] for u in users], "pte-user")))
        rng = np.random.default_rng(self.seed)
        s = stage.s
        sampling = Sampling(s.max_new_tokens, s.temperature, s.top_p, s.repetition_penalty)

        def groups():
            """On-policy batches: each step's completions are sampled from the adapter as trained so far."""
            for step in range(self.steps):
                model.eval()
                batch = rng.choice(users, min(self.users_per_step, len(users)), replace=False).tolist()
                prompts, completions, rewards = [], [], []
                for u in batch:
                    reqs = [Request(u, "user_init", user_prompts[u], derive_seed(self.seed, "grpo", step, u, k),
                                    sampling) for k in range(self.group_size)]
                    outs = generator.generate(stage.prompts.system, [r.prompt for r in reqs],
                                              [r.seed for r in reqs], sampling)
                    texts = [t for t, _ in outs]
                    vec = stage.encode(texts, "pte-user")
                    hist = np.stack([raw_item_vectors[i] for i in stage.user_items[u]])
                    nb = [current[n] for n in stage.user_nb.get(u, [])]
                    nb_vec = np.stack(nb) if nb else np.zeros((0, vec.shape[1]))
                    rewards.append(total_reward(collab_reward(vec, hist), dist_reward(vec, nb_vec),
                                                s.lambda_collab, s.lambda_dist))
                    prompts.append(generator.chat_texts(stage.prompts.system, [r.prompt for r in reqs]))
                    completions.append(texts)
                yield prompts, completions, np.array(rewards)

        params = [p for p in model.parameters() if p.requires_grad]
        result = train_loop(params, lambda ps: torch.optim.AdamW(ps, lr=self.learning_rate), groups(),
                            lambda batch: group_loss(model, tokenizer, *batch), model=model, device=base.device,
                            desc="PtE GRPO")
        digest = lora_digest(model)
        self.info = {"steps": self.steps, "losses": result.losses, "lora_hash": digest[:16]}
        return LoRAChatGenerator(base, model, tokenizer, digest)
