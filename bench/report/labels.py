"""What every table of bench/report prints the same way, in the lowest module of the package (it imports no
other bench/report module, so every table, the LaTeX engine and the convergence marks can share it without
an import circle): the marks (‡ ◊ * and their LaTeX), LaTeX escaping, metric and segment labels, the row
labels of a run (its split, backbone and method with the settings that vary among runs of that name) and the
evaluation protocol of a run, read from its method class (`bench.method.Method.protocol`)."""

from __future__ import annotations

import json
import unicodedata
from typing import Any

import pandas as pd

from bench.eval.ranking import KS, METRICS
from bench.selection import context_split_settings
from bench.spec import RunSpec

# --- marks ----------------------------------------------------------------------------------------------

CAP_MARK = "‡"  # a trained component stopped at its cap (bench.report.convergence)
COLLAPSE_MARK = "◊"  # a collapsed seed in the cell (bench.report.convergence)
LOAD_MARK = "*"  # a latency timed on a loaded machine
BETTER = r"\uparrow"  # significantly better than the baseline (corrected primary p < 0.05); base LaTeX
WORSE = r"\downarrow"  # significantly worse
CAP = r"\ddagger"
COLLAPSE = r"\diamond"  # a collapsed seed in the cell (bench.report.convergence), base LaTeX: no package

# --- metrics and segments -------------------------------------------------------------------------------

RANKING_METRICS = tuple(f"{name}@{k}" for name in METRICS for k in KS)
POINTWISE_METRICS = ("auc", "uauc")
RANKING_SEGMENTS = ("overall", "user:warm", "user:cold", "item:head", "item:tail")
POINTWISE_SEGMENTS = ("overall", "pair:warm", "pair:cold")
PROTOCOLS = ("ranking", "pointwise")

_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
            "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
            "<": "$<$", ">": "$>$", "|": "$|$"}
_UNICODE = {"±": r"$\pm$", "−": "$-$", "≠": r"$\neq$", "—": "---", "–": "--", "†": r"$^{\dagger}$",
            "↑": f"$^{{{BETTER}}}$", "↓": f"$^{{{WORSE}}}$",
            "‡": f"$^{{{CAP}}}$", "◊": f"$^{{{COLLAPSE}}}$", "α": r"$\alpha$", "≤": r"$\leq$", "≥": r"$\geq$",
            "×": r"$\times$", "…": r"\ldots{}", "→": r"$\rightarrow$", "·": r"$\cdot$", "’": "'", "‘": "`", "“": "``",
            "”": "''", "\u00a0": "~"}
_METRIC_SHORT = {"recall": "R", "ndcg": "N", "hit": "HR", "mrr": "MRR", "precision": "P"}
_SEGMENT_NAMES = {"overall": "all", "user:warm": "warm users", "user:cold": "cold users",
                  "item:head": "head items", "item:tail": "tail items", "pair:warm": "warm pairs",
                  "pair:cold": "cold pairs"}


def escape(text) -> str:
    """Plain text as LaTeX: specials escaped, known symbols as commands, accented Latin letters kept
    (pdflatex's utf8 input reads them), anything else reduced to ASCII. Ours, not Styler's
    `format(escape="latex")`: that one leaves ± ↑ ‡ ◊ — as Unicode, which pdflatex cannot set."""
    out = []
    for char in str(text):
        if char in _SPECIAL:
            out.append(_SPECIAL[char])
        elif char in _UNICODE:
            out.append(_UNICODE[char])
        elif ord(char) < 128 or (0xC0 <= ord(char) <= 0x17F and char not in "×÷"):
            out.append(char)
        else:
            out.append(unicodedata.normalize("NFKD", char).encode("ascii", "ignore").decode() or "?")
    return "".join(out)


def metric_label(metric: str) -> str:
    """recall@10 -> R@10, ndcg@20 -> N@20, auc -> AUC; unknown names escaped as they are."""
    name, _, k = metric.partition("@")
    if k and name in _METRIC_SHORT:
        return f"{_METRIC_SHORT[name]}@{escape(k)}"
    return metric.upper() if metric in POINTWISE_METRICS else escape(metric)


def segment_label(segment: str, short: bool = False) -> str:
    """user:cold -> cold users; short: cold (the caption says whose)."""
    if short:
        return "all" if segment == "overall" else escape(segment.rpartition(":")[2])
    return _SEGMENT_NAMES.get(segment, escape(segment))


def segments_phrase(segments) -> str:
    """warm / cold users, head / tail items: what the short segment headers stand for."""
    kinds: dict[str, list[str]] = {}
    for segment in segments:
        if segment != "overall":
            kind, _, name = segment.rpartition(":")
            kinds.setdefault(kind, []).append(escape(name))
    plural = {"user": "users", "item": "items", "pair": "pairs"}
    return ", ".join(f"{' / '.join(names)} {plural.get(kind, escape(kind))}" for kind, names in kinds.items())


# --- the protocol a run was evaluated under -------------------------------------------------------------

def method_protocol(method: str) -> str:
    """The protocol a registry entry's class declares: "ranking" (full-catalogue metrics: Recall, NDCG) or
    "pointwise" (AUC / UAUC over labelled pairs)."""
    from bench.catalog import METHODS

    return METHODS.get(method).protocol


def protocols(specs: list[RunSpec]) -> set[str]:
    """The protocols of the specs' methods."""
    return {method_protocol(spec.method) for spec in specs}


def frame_protocol(frame: pd.DataFrame) -> str:
    """The protocol a suite's tables follow, from its records' frame (`protocol` column, one per run: the method
    class's): "pointwise" (the AUC / UAUC tables) when any run is pointwise, else "ranking"."""
    return "pointwise" if (frame["protocol"] == "pointwise").any() else "ranking"


# --- row labels -----------------------------------------------------------------------------------------

def _sweep_labels(specs: list[RunSpec], group, settings, base) -> dict[str, str]:
    """Run id -> base(spec), plus `[key=value, ...]` for the settings whose values differ among the runs
    of its group, so swept runs are never pooled into one row."""
    groups: dict[Any, list[RunSpec]] = {}
    for spec in specs:
        groups.setdefault(group(spec), []).append(spec)
    out = {}
    for members in groups.values():
        keys = sorted({k for m in members for k in settings(m)
                       if len({json.dumps(settings(o).get(k), sort_keys=True, default=str) for o in members}) > 1})
        for spec in members:
            values = settings(spec)
            out[spec.run_id] = base(spec) + (" [" + ", ".join(f"{k}={values.get(k)}" for k in keys) + "]"
                                             if keys else "")
    return out


def backbone_labels(specs: list[RunSpec]) -> dict[str, str]:
    """Run id -> backbone name, plus the settings that vary among the runs of that backbone (a grid
    suite's sweep, e.g. `lightgcn [embedding_size=256]`)."""
    return _sweep_labels(specs, lambda s: s.backbone, lambda s: s.backbone_settings, lambda s: s.backbone)


def split_labels(specs: list[RunSpec]) -> dict[str, str]:
    """Run id -> split name, plus the split settings that vary among the runs of that split (`ctr_temporal
    [shots=16]`), so runs on different splits are never pooled; per-seed settings are left out."""
    return _sweep_labels(specs, lambda s: (s.dataset, s.split), context_split_settings, lambda s: s.split)


def method_labels(specs: list[RunSpec], store=None) -> dict[str, str]:
    """Run id -> method label, plus the method settings that vary among the runs of that method (e.g.
    `llm2rec [train_dataset=ml-1m]` in the transfer suite). With the store, a run whose record says it
    trained at another embedding width than its backbone setting says so (llminit-full keeps the
    encoder's width): `llminit-full (runs at d=384)`."""
    labels = _sweep_labels(specs, lambda s: (s.method, s.encoder), lambda s: s.method_settings, _label)
    if store is not None:
        for spec in specs:
            if not store.has(spec.run_id):
                continue
            effective = store.load(spec.run_id).get("method_info", {}).get("effective_embedding_size")
            if effective is not None and effective != spec.backbone_settings.get("embedding_size", effective):
                labels[spec.run_id] += f" (runs at d={effective})"
    return labels


def _label(spec: RunSpec) -> str:
    """Method name, with the encoder when the method's item table is the suite's text encoder itself
    (`text_encoder_rows` in its registry entry: seq-text [mpnet])."""
    from bench.catalog import METHODS

    shown = spec.encoder and getattr(METHODS.get(spec.method), "text_encoder_rows", False)
    return f"{spec.method} [{spec.encoder}]" if shown else spec.method


# --- latency --------------------------------------------------------------------------------------------

def latency_loaded(record: dict) -> bool:
    """Whether the record's latency probe ran while the machine's 1-minute load average exceeded its cores
    (other jobs sharing the CPU slow the probe: its milliseconds are an upper bound); False when not recorded."""
    latency = record.get("latency") or {}
    load, cores = latency.get("load_1min"), latency.get("cpu_count")
    return load is not None and cores is not None and float(load) > float(cores)


def latency_cell(runs: pd.DataFrame, digits: int = 2) -> str:
    """The median latency of a row's runs, marked when any of them was measured on a loaded machine."""
    loaded = "latency_loaded" in runs and bool(runs["latency_loaded"].any())
    return f"{runs['latency_ms'].median():.{digits}f}" + (f" {LOAD_MARK}" if loaded else "")
