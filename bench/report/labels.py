"""What every table of bench/report prints the same way, in the lowest module of the package (it imports no
other bench/report module, so every table, the LaTeX engine and the convergence marks can share it without
an import circle): the marks (‡ ◊ * and their LaTeX), LaTeX escaping, the display names of splits, methods,
backbones, metrics, segments and paradigms (`display`, from `names.yaml`) with the key line that maps them back
to the ids, the row labels of a run (its split, backbone and method with the settings that vary among runs of
that name) and the evaluation protocol of a run, read from its method class (`bench.method.Method.protocol`)."""

from __future__ import annotations

import json
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

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
NA = "n/a"  # a cell that cannot exist: the suite runs no such cell, a metric or segment a run cannot have
NOT_RUN = "not run"  # a cell the suite defines whose record is missing (LaTeX: NOT_RUN_LATEX, keyed beneath)
NOT_RUN_LATEX = "n.r."


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


# --- display names (names.yaml) ---------------------------------------------------------------------------

NAMES_FILE = Path(__file__).with_name("names.yaml")
KINDS = ("split", "method", "backbone", "metric", "metric_short", "segment", "setting", "unseen_items")
_SECTIONS = {"split": "splits", "method": "methods", "backbone": "backbones", "segment": "segments",
             "setting": "settings", "unseen_items": "unseen_items"}


@lru_cache(maxsize=1)
def names() -> dict:
    """The parsed names file (`names.yaml`): one section per kind of id, the paradigms list."""
    return yaml.safe_load(NAMES_FILE.read_text(encoding="utf-8")) or {}


def display(kind: str, id: str) -> str:
    """The name the tables print for `id` of `kind` ("split", "method", "backbone", "metric" (Markdown's
    NDCG@10), "metric_short" (LaTeX's N@10), "segment", "setting", "unseen_items"), plain text (not escaped);
    an id the names file does not know (a user's own method) prints as it is."""
    if kind in ("metric", "metric_short"):
        name, at, k = str(id).partition("@")
        entry = names().get("metrics", {}).get(name)
        if not entry:
            return str(id)
        return entry["markdown" if kind == "metric" else "latex"] + (f"@{k}" if at else "")
    if kind not in _SECTIONS:
        raise ValueError(f"display: unknown kind {kind!r}; one of {', '.join(KINDS)}")
    return str(names().get(_SECTIONS[kind], {}).get(id, id))


def segment_name(segment: str, split: str | None = None) -> str:
    """A segment's display name on a split (`user:cold` is "tail users" on longtail, "cold users" elsewhere)."""
    base = str(split).split(" ")[0] if split else None
    return str(names().get("split_segments", {}).get(base, {}).get(segment) or display("segment", segment))


def _suffix(suffix: str) -> str:
    """A label's setting suffix with the settings the names file knows shown by name: `[candidates=cold]` ->
    `[cold candidates]`; anything else as it is."""
    if not suffix.startswith("[") or not suffix.endswith("]"):
        return suffix
    parts = [part.strip() for part in suffix[1:-1].split(",")]
    return "[" + ", ".join(display("setting", part) for part in parts) + "]"


def display_label(kind: str, label: str) -> str:
    """A row or column label (`cold_items [candidates=cold]`, `llm2rec [train_dataset=ml-1m]`,
    `llminit-full (runs at d=384)`) with its leading id as its display name and its suffix kept (known
    settings by name): `Cold items [cold candidates]`."""
    name, space, suffix = str(label).partition(" ")
    return display(kind, name) + (space + _suffix(suffix) if space else "")


def paradigm_of(method: str) -> str:
    """The paradigm a registry entry belongs to (`names.yaml` `paradigms`: its family's paradigm, unless an
    entry-name prefix of that family names another); an entry of a family the file does not name: its family."""
    from bench.catalog import METHODS

    family = METHODS.family(method)
    rows = [row for row in names().get("paradigms", []) if row.get("family") == family]
    for row in rows:
        if row.get("prefix") and method.startswith(row["prefix"]):
            return row["name"]
    return next((row["name"] for row in rows if not row.get("prefix")), family)


def paradigm_order() -> tuple[str, ...]:
    """The paradigms table's row order (`names.yaml`)."""
    return tuple(dict.fromkeys(row["name"] for row in names().get("paradigms", [])))


def key_line(used: dict[str, Any]) -> str:
    """"Key: ID = random; LLMInit-PCA = llminit-pca, llminit-pca-seq; Warm (LOO) = temporal_loo": the display
    names a table printed mapped back to the ids (`used`: kind -> ids, segments as (segment, split) pairs), each
    name whose id differs from it; "" when none does."""
    pairs: dict[str, list[str]] = {}
    for kind, ids in used.items():
        for item in dict.fromkeys(ids):
            if kind == "segment":
                segment, split = item if isinstance(item, tuple) else (item, None)
                name, key = segment_name(segment, split), segment
            else:
                name, key = display(kind, item), str(item)
            if name != key:
                pairs.setdefault(name, [])
                if key not in pairs[name]:
                    pairs[name].append(key)
    return ("Key: " + "; ".join(f"{name} = {', '.join(ids)}" for name, ids in pairs.items())) if pairs else ""


LABEL_KINDS = {"Split": "split", "Backbone": "backbone", "Method": "method"}  # a table's label columns


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """A table (rows named by `Split`, `Backbone`, `Method` columns of ids and labels) with those columns as
    display names (`display_label`), for Markdown and LaTeX; the CSV keeps the ids."""
    out = table.copy()
    for column, kind in LABEL_KINDS.items():
        if column in out.columns:
            out[column] = out[column].map(lambda v, k=kind: display_label(k, v) if isinstance(v, str) else v)
    return out


def table_used(table: pd.DataFrame) -> dict[str, list[str]]:
    """The ids of a table's label columns, by kind (for `key_line`)."""
    return {kind: [label_ids(v) for v in table[column] if isinstance(v, str)]
            for column, kind in LABEL_KINDS.items() if column in table.columns}


def split_segment_note(splits) -> str:
    """"Long tail: cold users = tail users": the segments the shown splits name otherwise (`names.yaml`
    `split_segments`), for tables whose headers name segments generically; "" when none does."""
    parts = [f"{display('split', split)}: {display('segment', segment)} = {name}"
             for split in dict.fromkeys(label_ids(s) for s in splits)
             for segment, name in names().get("split_segments", {}).get(split, {}).items()]
    return "; ".join(parts)


def label_ids(label: str) -> str:
    """The id a label starts with (`cold_items [candidates=cold]` -> `cold_items`)."""
    return str(label).split(" ")[0]


def metric_label(metric: str) -> str:
    """The LaTeX header of a metric: recall@10 -> R@10, ndcg@20 -> N@20, auc -> AUC (`names.yaml`); unknown
    names escaped as they are."""
    return escape(display("metric_short", metric))


def segment_label(segment: str, short: bool = False) -> str:
    """user:cold -> cold users; short: cold (the caption says whose)."""
    if short:
        return "all" if segment == "overall" else escape(segment.rpartition(":")[2])
    return escape(display("segment", segment))


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
    """Run id -> backbone name, plus the settings swept within a cell: those whose values differ among the runs
    of one (dataset, split, backbone, method) (a grid suite's sweep, e.g. `lightgcn [embedding_size=256]`).
    Settings that differ only between cells are each row's own, not a sweep: a tuned profile gives every row its
    own learning rate, and its rows are still compared on one backbone."""
    cells: dict[tuple, list[RunSpec]] = {}
    for spec in specs:
        cells.setdefault((spec.dataset, spec.split, spec.backbone, spec.method, spec.encoder), []).append(spec)
    swept: dict[str, set[str]] = {}
    for (_, _, backbone, _, _), members in cells.items():
        swept.setdefault(backbone, set()).update(
            k for m in members for k in m.backbone_settings
            if len({json.dumps(o.backbone_settings.get(k), sort_keys=True, default=str) for o in members}) > 1)
    return _sweep_labels(specs, lambda s: s.backbone,
                         lambda s: {k: v for k, v in s.backbone_settings.items() if k in swept[s.backbone]},
                         lambda s: s.backbone)


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
