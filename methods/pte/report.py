"""PtE's own report pieces: the offline cost of its profiles and examples of the profiles it kept
(`bench table` adds them to a suite's tables through the family hooks `tables` and `examples`)."""

from __future__ import annotations

import pandas as pd

from bench.records import ResultStore
from bench.report.labels import method_labels
from bench.spec import RunSpec


def tables(specs: list[RunSpec], store: ResultStore) -> dict[str, pd.DataFrame]:
    """The family hook for tables of its own (every format): `offline_cost`."""
    return {"offline_cost": offline_cost_table(specs, store)}


def examples(specs: list[RunSpec], store: ResultStore) -> dict[str, pd.DataFrame]:
    """The family hook for example rows (written as Markdown only): `pte_examples`, the profiles PtE kept."""
    return {"pte_examples": profile_examples(specs, store)}


def _first_pte_info(specs: list[RunSpec], store: ResultStore, field: str):
    """(spec, method label, the record's PtE info) for the lowest-seed run per (dataset, split, method
    label) whose PtE info has `field`: the profile stage is shared by every seed and backbone."""
    seen = set()
    mlabels = method_labels(specs, store)
    for spec in sorted(specs, key=lambda s: s.seed):
        if not store.has(spec.run_id):
            continue
        info = store.load(spec.run_id).get("method_info", {}).get("pte") or {}
        key = (spec.dataset, spec.split, mlabels[spec.run_id])
        if info.get(field) and key not in seen:
            seen.add(key)
            yield spec, mlabels[spec.run_id], info


def offline_cost_table(specs: list[RunSpec], store: ResultStore) -> pd.DataFrame:
    """PtE's offline cost, one row per (dataset, split, method): the profiles the method uses, the tokens
    and seconds it took to generate them when they were first generated (shared by every seed and
    backbone, so counted once), tokens/s, refinement rounds and the convergence distance per round
    (mean 1 - cos between successive rounds' profile encodings, users / items). Online latency is in
    the main table."""
    rows = []
    for spec, label, info in _first_pte_info(specs, store, "offline_cost"):
        cost = info["offline_cost"]
        rate = cost["first_tokens"] / cost["first_seconds"] if cost.get("first_seconds") else float("nan")
        distances = "; ".join(
            f"r{d['round']}: " + ", ".join(f"{k} {d[k]:.3f}" for k in ("user", "item") if k in d)
            for d in info.get("distances", [])) or "—"
        rows.append({"Dataset": spec.dataset, "Split": spec.split, "Method": label,
                     "Users": info.get("n_users"), "Items": info.get("n_items"),
                     "Profiles used": cost["requested"], "Tokens generated": cost["first_tokens"],
                     "Generation s": round(cost["first_seconds"], 1),
                     "Tokens/s": round(rate, 1), "Rounds": info.get("rounds"),
                     "Converged": "yes" if info.get("converged") else "no",
                     "Distance per round": distances, "Run": spec.run_id})
    return pd.DataFrame(rows)


def profile_examples(specs: list[RunSpec], store: ResultStore) -> pd.DataFrame:
    """The profiles PtE kept for the first three users (by id), per (dataset, split, method), as the
    first seed's record stores them (the profile stage is shared by every seed and backbone)."""
    rows = []
    for spec, label, info in _first_pte_info(specs, store, "examples"):
        for user, text in info["examples"].items():
            rows.append({"Dataset": spec.dataset, "Split": spec.split, "Method": label,
                         "User": user, "Profile": text.replace("\n", " ").replace("|", "/"), "Run": spec.run_id})
    return pd.DataFrame(rows)
