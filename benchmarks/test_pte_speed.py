"""PtE profile generation against transformers' own `generate` (pytest-benchmark; not in the default test run).

    .venv/bin/python -m pytest benchmarks/test_pte_speed.py -m benchmark --benchmark-enable -s

SmolLM2-135M-Instruct on real ml-100k U0 prompts (the longtail split's first `PTE_BENCH_PROFILES` users, default 8,
the CPU-default prompt settings), one batch, 32 new tokens: the harness's `ChatGenerator.generate` (chat template,
tokenisation, decoding; greedy for the profile stage, seeded per-row sampling for the K candidates) against the
anchor, a plain `model.generate` on the same tokenised batch for as many steps as the harness's batch took
(greedy; for sampling, transformers' own sampler at the same temperature / top-p). CPU seconds, torch at
`PTE_BENCH_THREADS` threads (default 1: thread counts left free moved this benchmark 6x), a warm-up, rotating rounds (benchmarks/timing.py). Bounds: greedy <= 1.10 x the anchor
(the same decoding; it must emit the same tokens), sampled <= 1.25 x (the per-row generators). Sampling must be
row-independent: a profile's text does not depend on which other profiles share its batch.
"""

from __future__ import annotations

import os

import pytest

from bench.data import assets
from bench.data.cards import load_card, load_dataset
from bench.data.splits import load_or_make_split, resolve_split_params
from benchmarks.timing import alternate, check, fixed_threads, median, paired_ratio

pytestmark = pytest.mark.benchmark
N, TOKENS = int(os.environ.get("PTE_BENCH_PROFILES", "8")), 32
THREADS = int(os.environ.get("PTE_BENCH_THREADS", "1"))
ROUNDS = int(os.environ.get("PTE_BENCH_ROUNDS", "2"))
BOUNDS = {"greedy": 1.10, "sampled": 1.25}


@pytest.mark.parametrize("mode", ["greedy", "sampled"])
def test_profile_generation_vs_plain_generate(benchmark, tmp_path, bench_cache, mode):
    import torch

    from methods.llm.generate import ChatGenerator, Sampling
    from methods.llm2rec.method import item_titles
    from methods.pte.generate import ProfileStore, PromptSet
    from methods.pte.method import PtESettings
    from methods.pte.stage import ProfileStage

    dataset = load_dataset(load_card("ml-100k"), bench_cache)
    split = load_or_make_split(dataset, "longtail", resolve_split_params("longtail", None), bench_cache)
    settings = PtESettings(item_noun="movies")
    prompts = PromptSet(noun="movies")
    generator = ChatGenerator(assets.smollm2_dir(bench_cache), cache_dir=bench_cache)
    stage = ProfileStage(split.train.astype({"user": str, "item": str}), item_titles(dataset), dataset.item_text,
                         generator, prompts, ProfileStore(tmp_path / "pte-store"), None, settings, progress=False)
    users = sorted(stage.user_items)[:N]
    texts = [stage.user_init_prompt(u) for u in users]
    greedy = mode == "greedy"
    sampling = Sampling(TOKENS, 0.0 if greedy else settings.temperature, 1.0 if greedy else settings.top_p,
                        settings.repetition_penalty)
    seeds = list(range(N))

    with fixed_threads(THREADS):
        model, tokenizer = generator.load()
        batch = tokenizer(generator.chat_texts(prompts.system, texts), return_tensors="pt", padding=True,
                          add_special_tokens=False)
        width = batch["input_ids"].shape[1]
        # the harness's batch length (rows stop at their own EOS; seeded, so every call makes the same): the anchor
        # generates exactly as many steps, so both do the same prefill and decoding work
        steps = max(n for _, n in generator.generate(prompts.system, texts, seeds, sampling))  # also a warm-up

        def harness(_):
            return generator.generate(prompts.system, texts, seeds, sampling)

        def plain(round_: int):
            torch.manual_seed(round_)
            options = ({"do_sample": False} if greedy else
                       {"do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": None})
            with torch.inference_mode():
                out = model.generate(**batch, max_new_tokens=steps, min_new_tokens=steps,
                                     repetition_penalty=sampling.repetition_penalty,
                                     pad_token_id=tokenizer.pad_token_id, **options)
            return out[:, width:]

        plain(0)  # warm-up
        seconds, results = alternate({"harness": harness, "plain_generate": plain}, ROUNDS, warmup=0)
    out = results["harness"][0]
    assert max(n for _, n in out) == steps and results["plain_generate"][0].shape[1] == steps
    if greedy:  # the same decoding: the same tokens (the anchor goes on where a row met its EOS)
        plain_texts = [tokenizer.decode(r[:n], skip_special_tokens=True).strip()
                       for r, (_, n) in zip(results["plain_generate"][0], out)]
        assert all(p.startswith(t) for p, (t, _) in zip(plain_texts, out))
    tokens = sum(n for _, n in out)
    assert all(text for text, _ in out) and tokens > N
    if not greedy:  # the first four alone give the same texts as inside the full batch
        alone = generator.generate(prompts.system, texts[:4], seeds[:4], sampling)
        assert [t for t, _ in alone] == [t for t, _ in out[:4]]
    check(benchmark, f"{mode}_cpu_over_plain_generate", paired_ratio(seconds, "harness", "plain_generate"),
          BOUNDS[mode], mode=mode, profiles=N, steps=steps, rounds=ROUNDS,
          profiles_per_cpu_s=N / median(seconds["harness"]), generated_tokens_per_cpu_s=tokens / median(seconds["harness"]),
          prompt_tokens=int(batch["attention_mask"].sum()), harness_cpu_s=median(seconds["harness"]),
          plain_cpu_s=median(seconds["plain_generate"]))
