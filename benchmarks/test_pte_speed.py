"""PtE profile generation speed (pytest-benchmark; not in the default test run).

    .venv/bin/python -m pytest benchmarks/test_pte_speed.py -m benchmark --benchmark-enable -s

Profiles/s and generated tokens/s of SmolLM2-135M-Instruct on real ml-100k U0 prompts (the longtail
split's first users, the CPU-default prompt settings), greedy (the profile stage) and seeded sampling
(the K candidates). Sampling must be row-independent: a profile's text does not depend on which other
profiles share its batch.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.data import assets
from bench.data.cards import load_card, load_dataset
from bench.data.splits import load_or_make_split, resolve_split_params

pytestmark = pytest.mark.benchmark
CACHE = Path(os.environ.get("BENCH_CACHE", "datasets/cache"))
N, BATCH, TOKENS = 16, 16, 32


@pytest.mark.parametrize("mode", ["greedy", "sampled"])
def test_profile_generation_throughput(benchmark, mode):
    from methods.llm.generate import ChatGenerator, Sampling
    from methods.llm2rec.method import item_titles
    from methods.pte.generate import ProfileStore, PromptSet
    from methods.pte.method import PtESettings
    from methods.pte.stage import ProfileStage

    dataset = load_dataset(load_card("ml-100k"), CACHE)
    split = load_or_make_split(dataset, "longtail", resolve_split_params("longtail", None), CACHE)
    settings = PtESettings(item_noun="movies").stage_settings()
    prompts = PromptSet(noun="movies")
    generator = ChatGenerator(assets.smollm2_dir(CACHE), cache_dir=CACHE)
    stage = ProfileStage(split.train.astype({"user": str, "item": str}), item_titles(dataset), dataset.item_text,
                         generator, prompts, ProfileStore(CACHE / "bench-tmp" / "pte-store"), None, settings,
                         progress=False)
    users = sorted(stage.user_items)[:N]
    texts = [stage.user_init_prompt(u) for u in users]
    sampling = Sampling(TOKENS, 0.0 if mode == "greedy" else settings.temperature,
                        1.0 if mode == "greedy" else settings.top_p, settings.repetition_penalty)
    seeds = list(range(N))
    generator.generate(prompts.system, texts[:2], seeds[:2], Sampling(2))  # load and warm up

    def run():
        return generator.generate(prompts.system, texts, seeds, sampling)

    out = benchmark.pedantic(run, rounds=1, iterations=1)
    seconds = benchmark.stats.stats.median
    tokens = sum(n for _, n in out)
    benchmark.extra_info.update({"profiles_per_s": N / seconds, "tokens_per_s": tokens / seconds,
                                 "prompt_tokens": generator.last_prompt_tokens, "batch": BATCH})
    print(f"\n{mode}: {N / seconds:.2f} profiles/s, {tokens / seconds:.1f} generated tokens/s, "
          f"{generator.last_prompt_tokens} prompt tokens in the batch")
    assert all(text for text, _ in out) and tokens > N
    if mode == "sampled":  # the first four alone give the same texts as inside the full batch
        alone = generator.generate(prompts.system, texts[:4], seeds[:4], sampling)
        assert [t for t, _ in alone] == [t for t, _ in out[:4]]
