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
        a, b = store.per_user(spec_a.run_id), store.per_user(spec_b.run_id)
        if metric not in a.columns or metric not in b.columns:  # e.g. a record-level metric only
            continue
        a = a[["user", metric]].rename(columns={metric: "a"})
        b = b[["user", metric]].rename(columns={metric: "b"})
        merged = a.merge(b, on="user").dropna()
        merged["seed"] = spec_a.seed
        frames.append(merged)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["user", "a", "b", "seed"])


def compare(store: ResultStore, runs_a: list[RunSpec], runs_b: list[RunSpec], metric: str) -> dict:
    """Effect (mean A - mean B, relative %), per-user Wilcoxon p, per-seed paired t p."""
    pairs = paired_vectors(store, runs_a, runs_b, metric)
    if pairs.empty:
        return compare_seeds(store, runs_a, runs_b, metric)
    seeds = pairs.groupby("seed")[["a", "b"]].mean()
    diff = pairs["a"] - pairs["b"]
    wilcoxon_p = float(stats.wilcoxon(pairs["a"], pairs["b"]).pvalue) if (diff != 0).any() else 1.0
    t_p = float(stats.ttest_rel(seeds["a"], seeds["b"]).pvalue) if len(seeds) > 1 else float("nan")
    mean_a, mean_b = float(seeds["a"].mean()), float(seeds["b"].mean())
    sd = float(diff.std(ddof=1)) if len(diff) > 1 else float("nan")
    return {"metric": metric, "mean_a": mean_a, "mean_b": mean_b, "diff": mean_a - mean_b,
            "relative": (mean_a / mean_b - 1) if mean_b else float("nan"),
            # paired effect size: Cohen's d_z = mean / sd of the per-user (x seed) differences
            "effect_dz": float(diff.mean()) / sd if sd and sd == sd else float("nan"),
            "std_a": float(seeds["a"].std(ddof=1)) if len(seeds) > 1 else float("nan"),
            "std_b": float(seeds["b"].std(ddof=1)) if len(seeds) > 1 else float("nan"),
            "wilcoxon_p": wilcoxon_p, "ttest_p": t_p, "n_users": int(pairs["user"].nunique()),
            "n_pairs": int(len(pairs)), "n_seeds": int(len(seeds))}


def compare_seeds(store: ResultStore, runs_a: list[RunSpec], runs_b: list[RunSpec], metric: str) -> dict:
    """Record-level fallback (a metric without per-user values, e.g. AUC): paired t over seeds only."""
    def values(runs):
        out = {}
        for spec in runs:
            if store.has(spec.run_id):
                value = store.load(spec.run_id).get("metrics", {}).get("overall", {}).get(metric)
                if value is not None:
                    out[spec.seed] = float(value)
        return out

    va, vb = values(runs_a), values(runs_b)
    seeds = sorted(set(va) & set(vb))
    if not seeds:
        return {"metric": metric, "n_users": 0, "n_seeds": 0}
    a, b = np.array([va[s] for s in seeds]), np.array([vb[s] for s in seeds])
    diff = a - b
    t_p = float(stats.ttest_rel(a, b).pvalue) if len(seeds) > 1 and diff.std() > 0 else float("nan")
    sd = float(diff.std(ddof=1)) if len(seeds) > 1 else float("nan")
    return {"metric": metric, "mean_a": float(a.mean()), "mean_b": float(b.mean()), "diff": float(diff.mean()),
            "relative": float(a.mean() / b.mean() - 1) if b.mean() else float("nan"),
            "effect_dz": float(diff.mean()) / sd if sd and sd == sd else float("nan"),
            "std_a": float(a.std(ddof=1)) if len(seeds) > 1 else float("nan"),
            "std_b": float(b.std(ddof=1)) if len(seeds) > 1 else float("nan"),
            "wilcoxon_p": float("nan"), "ttest_p": t_p, "n_users": 0, "n_pairs": 0, "n_seeds": len(seeds)}


CORRECTIONS = {"holm": "holm", "bh": "fdr_bh", "fdr_bh": "fdr_bh", "none": None}


def correct(pvalues: list[float], method: str = "holm") -> list[float]:
    """Multiple-comparison correction: 'holm' (default), 'bh'/'fdr_bh' (Benjamini-Hochberg) or 'none'."""
    from statsmodels.stats.multitest import multipletests

    if method not in CORRECTIONS:
        from bench.errors import UnknownChoiceError

        raise UnknownChoiceError("p-value correction", method, CORRECTIONS)
    method = CORRECTIONS[method]
    if method is None:
        return [float(p) for p in pvalues]
    values = np.asarray(pvalues, dtype=float)
    out = np.full_like(values, np.nan)
    ok = ~np.isnan(values)
    if ok.any():
        out[ok] = multipletests(values[ok], method=method)[1]
    return out.tolist()
