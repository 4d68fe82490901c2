"""How far apart two *different* entities' PtE profiles are: the scale for the round-to-round convergence
distances in offline_cost.md (mean 1 - cos between successive rounds of the same user / item).

    python scripts/pte_profile_spread.py --cache datasets/cache --n 600

Reads the profile store (cache/pte/store), takes the greedy (temperature 0) profiles per prompt template
(user_init = U0, user_refine = U1.., item = I*), samples n of each with a fixed seed, encodes them with
MiniLM (the suites' f_enc) and prints the mean pairwise 1 - cos between different entities.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default="datasets/cache")
    parser.add_argument("--n", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from bench.encoders import get_encoder
    from bench.errors import BenchError
    from methods.pte.generate import ProfileStore

    folder = Path(args.cache) / "pte" / "store"
    if not folder.exists():
        raise BenchError(f"no PtE profile store at {folder}: run a PtE suite (or scripts/pte_profiles.py) first")
    texts: dict[str, list[str]] = {}
    for record in ProfileStore(folder):
        if record["sampling"]["temperature"] == 0 and record["template"] in ("user_init", "user_refine", "item"):
            texts.setdefault(record["template"], []).append(record["text"])
    encoder = get_encoder("minilm", None, "cpu", Path(args.cache))
    rng = random.Random(args.seed)
    out = {}
    for template, pool in sorted(texts.items()):
        sample = rng.sample(pool, min(args.n, len(pool)))
        vectors = encoder.encode(sample, progress=False)
        sims = vectors @ vectors.T  # MiniLM vectors are unit norm
        n = len(sample)
        out[template] = {"profiles": n, "mean_1_minus_cos": round(float(1 - (sims.sum() - n) / (n * (n - 1))), 3)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
