"""`bench verify`: rerun stored runs into a scratch store and compare them with the stored records.

A seeded sample of a suite's complete runs (or every one) is rerun with the same specs; per run the report
says whether every metric (overall and per segment) and the per-user sidecar are bit-identical, else the
largest absolute difference and where it is, together with the provenance that differs (package versions,
torch threads, machine, run options, git commit): the facts that explain a difference.

Only what the stored record holds is compared: a metric or per-user column that the code computes now but
the record predates (e.g. `item:cold`, `catalogue`, `tail_share@10`, added for new runs) is listed as new,
never counted as a difference; one the record holds and the rerun lacks is (an infinite difference). The
records' seals (`bench.records`) are checked when the records are loaded and never compared: a rerun's seal
differs from the stored one (its provenance and timings do) whatever its metrics.

`bench verify --records` (`verify_records`) reruns nothing: it checks every stored record's seal and
content (the store's completeness check; its run id is the one its spec hashes to; each overall metric is
the mean of its per-user column where the record has one) and reports the bad ones, one line each.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import BenchError
from bench.options import RunOptions
from bench.records import PER_USER_FILE, ResultStore, inspect_record


def _flatten(value: Any, prefix: str = "") -> dict[str, float]:
    """Every number of a nested metrics dict, keyed by its path."""
    out: dict[str, float] = {}
    if isinstance(value, dict):
        for key, sub in value.items():
            out.update(_flatten(sub, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out[prefix] = float(value)
    return out


def metric_difference(a: dict, b: dict) -> tuple[float, str | None]:
    """(largest |a - b| over the metrics stored record `a` holds, its key); a key of `a` that rerun `b` lacks,
    or NaN in one only, counts as infinite; keys only `b` holds (computed since) are not compared."""
    fa, fb = _flatten(a), _flatten(b)
    worst, where = 0.0, None
    for key in sorted(fa):
        if key not in fb:
            return float("inf"), key
        x, y = fa[key], fb[key]
        if np.isnan(x) and np.isnan(y):
            continue
        diff = abs(x - y) if not (np.isnan(x) or np.isnan(y)) else float("inf")
        if diff > worst:
            worst, where = diff, key
    return worst, where


def new_metrics(stored: dict, rerun: dict, stored_users: pd.DataFrame, rerun_users: pd.DataFrame) -> list[str]:
    """Metric keys and per-user columns the rerun has and the stored record predates (not compared)."""
    keys = sorted(set(_flatten(rerun)) - set(_flatten(stored)))
    return keys + [f"per_user.{c}" for c in rerun_users.columns if c not in stored_users.columns]


def sidecar_difference(a: pd.DataFrame, b: pd.DataFrame) -> float:
    """Largest |difference| between stored sidecar `a` and rerun `b` over `a`'s columns (inf when the rows
    differ or `b` lacks one of them; columns only `b` has, computed since, are not compared)."""
    if any(c not in b.columns for c in a.columns) or len(a) != len(b):
        return float("inf")
    b = b[list(a.columns)]
    numeric = a.select_dtypes("number").columns
    if not a.drop(columns=numeric).equals(b.drop(columns=numeric)):
        return float("inf")
    if len(numeric) == 0:
        return 0.0
    x, y = a[numeric].to_numpy(float), b[numeric].to_numpy(float)
    both_nan = np.isnan(x) & np.isnan(y)
    diff = np.where(both_nan, 0.0, np.abs(x - y))
    return float(np.nan_to_num(diff, nan=np.inf).max(initial=0.0))


def comparable(record: dict) -> dict:
    """The record without its seal: what a rerun's record is compared with (the seal covers provenance and
    timings, which a rerun never reproduces)."""
    return {k: v for k, v in record.items() if k != "seal"}


def provenance_differences(stored: dict, rerun: dict) -> list[str]:
    """'key: stored -> rerun' for the provenance facts that can explain a numeric difference."""
    out = []
    a, b = stored.get("provenance", {}), rerun.get("provenance", {})
    for section in ("packages", "machine", "options"):
        sa, sb = a.get(section) or {}, b.get(section) or {}
        for key in sorted(set(sa) | set(sb)):
            if sa.get(key) != sb.get(key):
                out.append(f"{section}.{key}: {sa.get(key)} -> {sb.get(key)}")
    if (a.get("git") or {}).get("commit") != (b.get("git") or {}).get("commit"):
        out.append(f"git: {(a.get('git') or {}).get('commit')} -> {(b.get('git') or {}).get('commit')}")
    for key in ("dataset_hash", "split_hash", "encoder_fingerprint"):
        if a.get(key) != b.get(key):
            out.append(f"{key}: {a.get(key)} -> {b.get(key)}")
    return out


def verify_suite(suite_name: str, profile: str | None, results: Path, cache: Path, options: RunOptions,
                 sample: int | None = 3, seed: int = 0, scratch: Path | None = None,
                 workers: int = 1, keep: bool = False) -> dict[str, Any]:
    """Rerun `sample` stored runs of the suite (None: all) into `scratch` and compare each with its record.
    Without `scratch`, a temporary folder is used and removed afterwards unless `keep`."""
    from bench.spec import expand, load_suite

    suite = load_suite(suite_name, profile)
    store = ResultStore(results)
    stored = [s for s in expand(suite) if store.has(s.run_id)]
    if not stored:
        raise BenchError(f"no stored runs of suite {suite.name!r} under {results}; nothing to verify")
    stored.sort(key=lambda s: s.run_id)
    if sample is not None and sample < len(stored):
        rng = np.random.default_rng(seed)
        stored = [stored[i] for i in sorted(rng.choice(len(stored), sample, replace=False))]
    temporary = scratch is None
    scratch = Path(scratch) if scratch is not None else Path(tempfile.mkdtemp(prefix="bench-verify-"))
    try:
        report = _verify_into(store, stored, ResultStore(scratch), cache, options, workers, suite.name, profile)
    finally:
        if temporary and not keep:
            shutil.rmtree(scratch, ignore_errors=True)
    report["scratch_removed"] = temporary and not keep
    return report


def _verify_into(store: ResultStore, stored: list, scratch_store: ResultStore, cache: Path, options: RunOptions,
                 workers: int, suite_name: str, profile: str | None) -> dict[str, Any]:
    from bench.executors import run_specs

    scratch = scratch_store.root
    summary = run_specs(stored, scratch_store, cache, options, workers,
                        {"verify": suite_name, "profile": profile})
    rows = []
    for spec in stored:
        row: dict[str, Any] = {"run_id": spec.run_id, "label": spec.label}
        if not scratch_store.has(spec.run_id):
            error = summary["failed"].get(spec.label, "no record")
            row.update(identical=False, metric_diff=float("inf"), metric=None, per_user_diff=float("inf"),
                       provenance=[f"rerun failed: {error.strip().splitlines()[-1] if error else ''}"])
            rows.append(row)
            continue
        old, new = comparable(store.load(spec.run_id)), comparable(scratch_store.load(spec.run_id))
        diff, where = metric_difference(old["metrics"], new["metrics"])
        old_users, new_users = store.per_user(spec.run_id), scratch_store.per_user(spec.run_id)
        users = sidecar_difference(old_users, new_users)
        row.update(identical=diff == 0 and users == 0, metric_diff=diff, metric=where, per_user_diff=users,
                   provenance=provenance_differences(old, new),
                   new=new_metrics(old["metrics"], new["metrics"], old_users, new_users))
        rows.append(row)
    return {"suite": suite_name, "scratch": str(scratch), "stored": len(stored), "runs": rows}


def render_verification(report: dict[str, Any]) -> str:
    from tabulate import tabulate

    table = [[r["run_id"], r["label"], "yes" if r["identical"] else "NO",
              f"{r['metric_diff']:.3g}" + (f" ({r['metric']})" if r["metric"] and r["metric_diff"] else ""),
              f"{r['per_user_diff']:.3g}", "; ".join(r["provenance"]) or "—", len(r.get("new", []))]
             for r in report["runs"]]
    same = sum(r["identical"] for r in report["runs"])
    head = (f"bench verify: suite {report['suite']}: {same} of {len(report['runs'])} rerun runs bit-identical "
            f"to their stored records (scratch store {report['scratch']}"
            f"{', removed; --keep keeps it' if report.get('scratch_removed') else ''})")
    return head + "\n\n" + tabulate(table, headers=["run id", "run", "identical", "max |Δ| metric",
                                                      "max |Δ| per user", "provenance that differs",
                                                      "new, not compared"],
                                    tablefmt="github")


# ---------------------------------------------------------------- bench verify --records

MEAN_TOLERANCE = 1e-9  # relative: a metric summed in another order (pointwise UAUC) differs in its last bits


def content_problem(record: dict, folder: Path) -> str | None:
    """What the record's content contradicts (None: nothing): its run id is the one its spec hashes to today,
    and each overall metric is the mean of the per-user sidecar's column of that name (counts, `n_*`, are
    totals and left out). For a record that passed the store's check (fields present, sidecar there)."""
    from bench.spec import RunSpec

    try:
        spec_id = RunSpec.model_validate(record["spec"]).run_id
    except Exception as exc:  # a spec that no longer validates or cannot be hashed here
        reason = " ".join(str(exc).split())[:200]
        return f"its spec gives no run id ({type(exc).__name__}: {reason})"
    if spec_id != record["run_id"]:
        return f"its spec hashes to run id {spec_id}, the record says {record['run_id']}"
    try:
        per_user = pd.read_csv(Path(folder) / PER_USER_FILE, dtype={"user": str})
    except Exception as exc:
        return f"{PER_USER_FILE} does not read ({type(exc).__name__})"
    for key, value in sorted(record["metrics"]["overall"].items()):
        if key.startswith("n_") or key not in per_user.columns:
            continue
        column = pd.to_numeric(per_user[key], errors="coerce").to_numpy(float)
        mean = float(np.nanmean(column)) if (~np.isnan(column)).any() else float("nan")
        stored = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        if stored is None:
            return f"metrics.overall.{key} is {value!r}, not a number"
        if np.isnan(mean) and np.isnan(stored):
            continue
        if not np.isclose(stored, mean, rtol=MEAN_TOLERANCE, atol=1e-12):
            return (f"metrics.overall.{key} is {stored!r}, the mean of its {PER_USER_FILE} column is {mean!r}")
    return None


def check_stored_record(folder: Path) -> tuple[str | None, bool]:
    """(problem, sealed) of the record in run folder `folder`: the store's check (seal, fields, sidecars),
    then its content (`content_problem`)."""
    folder = Path(folder)
    record, problem, sealed = inspect_record(folder / "record.json", folder.name)
    if problem is None:
        problem = content_problem(record, folder)
    return problem, sealed


def verify_records(results: Path) -> dict[str, Any]:
    """Check every record under `results`/runs (no rerun): {"bad": [(path, problem)], "checked", "sealed",
    "unsealed", "without_record"} (run folders holding no record: running, failed or interrupted)."""
    runs = Path(results) / "runs"
    if not runs.is_dir():
        raise BenchError(f"no run records under {results} ({runs} is not a folder)")
    report: dict[str, Any] = {"results": str(results), "bad": [], "checked": 0, "sealed": 0, "unsealed": 0,
                              "without_record": 0}
    for folder in sorted(p for p in runs.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not (folder / "record.json").exists():
            report["without_record"] += 1
            continue
        report["checked"] += 1
        problem, sealed = check_stored_record(folder)
        report["sealed" if sealed else "unsealed"] += 1
        if problem is not None:
            report["bad"].append((str(folder / "record.json"), problem))
    return report


def render_record_check(report: dict[str, Any]) -> str:
    lines = [f"bench verify: {path}: {problem}" for path, problem in report["bad"]]
    summary = (f"bench verify --records: {report['checked']} records under {report['results']}/runs: "
               f"{report['checked'] - len(report['bad'])} good, {len(report['bad'])} bad; {report['sealed']} "
               f"sealed, {report['unsealed']} unsealed (written before seals; scripts/seal_records.py seals them)")
    if report["without_record"]:
        summary += f"; {report['without_record']} run folders without a record (running or unfinished) not checked"
    return "\n".join([*lines, summary])
