"""Paired significance tests over run records: per-user Wilcoxon on the sidecar metric vectors
(pooled over seeds, users matched by id and seed) and a paired t-test over seeds; Holm correction
by default, Benjamini-Hochberg as an option.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from bench.records import ResultStore
from bench.spec import RunSpec


def paired_vectors(store: ResultStore, runs_a: list[RunSpec], runs_b: list[RunSpec], metric: str) -> pd.DataFrame:
    """Per (seed, user) values of `metric` for A and B, matched on seed and user."""
    frames = []
    by_seed_b = {s.seed: s for s in runs_b}
    for spec_a in runs_a:
        spec_b = by_seed_b.get(spec_a.seed)
        if spec_b is None or not (store.has(spec_a.run_id) and store.has(spec_b.run_id)):
            continue
        a = store.per_user(spec_a.run_id)[["user", metric]].rename(columns={metric: "a"})
        b = store.per_user(spec_b.run_id)[["user", metric]].rename(columns={metric: "b"})
        merged = a.merge(b, on="user").dropna()
        merged["seed"] = spec_a.seed
        frames.append(merged)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["user", "a", "b", "seed"])


def compare(store: ResultStore, runs_a: list[RunSpec], runs_b: list[RunSpec], metric: str) -> dict:
    """Effect (mean A - mean B, relative %), per-user Wilcoxon p, per-seed paired t p."""
    pairs = paired_vectors(store, runs_a, runs_b, metric)
    if pairs.empty:
        return {"metric": metric, "n_users": 0, "n_seeds": 0}
    seeds = pairs.groupby("seed")[["a", "b"]].mean()
    diff = pairs["a"] - pairs["b"]
    wilcoxon_p = float(stats.wilcoxon(pairs["a"], pairs["b"]).pvalue) if (diff != 0).any() else 1.0
    t_p = float(stats.ttest_rel(seeds["a"], seeds["b"]).pvalue) if len(seeds) > 1 else float("nan")
    mean_a, mean_b = float(seeds["a"].mean()), float(seeds["b"].mean())
    return {"metric": metric, "mean_a": mean_a, "mean_b": mean_b, "diff": mean_a - mean_b,
            "relative": (mean_a / mean_b - 1) if mean_b else float("nan"),
            "wilcoxon_p": wilcoxon_p, "ttest_p": t_p, "n_users": int(pairs["user"].nunique()),
            "n_pairs": int(len(pairs)), "n_seeds": int(len(seeds))}


def correct(pvalues: list[float], method: str = "holm") -> list[float]:
    """Multiple-comparison correction: 'holm' (default) or 'fdr_bh' (Benjamini-Hochberg)."""
    from statsmodels.stats.multitest import multipletests

    values = np.asarray(pvalues, dtype=float)
    out = np.full_like(values, np.nan)
    ok = ~np.isnan(values)
    if ok.any():
        out[ok] = multipletests(values[ok], method=method)[1]
    return out.tolist()
