r"""LaTeX tables a paper can take as they are: booktabs rules, columns grouped under
`\multicolumn{k}{c}{dataset / split}` with a `\cmidrule` beneath and the metrics (R@10, N@10) in the
second header row, rows (backbone, method), every text cell escaped, a caption and a label, in a
page-wide (`table*`) and a column-wide (`table`) variant.

Built from the records' frame (`tables.collect`) and the numeric significance results, never from the
Markdown strings. Best and second best are marked per column within each backbone block: the suites
compare methods on the same backbone (each against its baseline), so a block is the comparable set.
Values are ranked as printed (4 decimals; every metric here is higher-is-better) with competition
ranking: all rows at the maximum are bold, a row with exactly one row above it is underlined (a tie for
best leaves no second), a block of two bolds its better row only, and a column where every row ties (or
a block of one row) marks nothing.

Each tabular is written by pandas' `Styler.to_latex` (`tabular`: column format, booktabs rules, the
`\multicolumn` group titles of a two-level column index). Ours, each where Styler has no way to say it:
the `\cmidrule` under a group title and the blocks of rows (`_booktabs_lines`), the best / second marks
and the std beneath a mean (`_value`), the splitting of a grid too wide for its measure into stacked
tabulars (`split_grid`, `MAX_VALUE_COLUMNS`) and the float around them with the notes beneath (`float_env`).
The LaTeX of every cell (escaping, marks, stacked labels) comes from `bench.report.labels` and the grid
builders here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pandas as pd

from bench.errors import BenchError, UnknownChoiceError
from bench.report.convergence import COLLAPSE_FRACTION, COLLAPSE_MARK, collapse_latex, flagged
from bench.report.labels import (
    BETTER,
    CAP,
    COLLAPSE,
    POINTWISE_METRICS,
    POINTWISE_SEGMENTS,
    RANKING_METRICS,
    RANKING_SEGMENTS,
    WORSE,
    escape,
    frame_protocol,
    metric_label,
    protocols,
    segment_label,
    segments_phrase,
    split_labels,
)
from bench.report.stats import as_directions, format_seeds_needed

WIDTHS = ("page", "column")
# the column-wide segment table's default: the segments cold-start papers read (overall is the main
# table's; page-wide: every segment)
COLUMN_SEGMENTS = ("user:cold", "item:tail")
COLUMN_SEGMENTS_POINTWISE = ("pair:cold",)
# needed by every generated table (a comment at the top of each .tex says so)
PACKAGES = ("booktabs",)
_CORRECTION_NAMES = {"holm": "Holm", "bh": "Benjamini--Hochberg", "none": "uncorrected"}


# --- what goes in: --metrics, --columns, --latex-width ------------------------------------------------

@dataclass(frozen=True)
class LatexSelection:
    """What the LaTeX tables carry; None keeps a table's defaults. `splits`: `dataset/split` labels."""
    metrics: tuple[str, ...] | None = None
    splits: tuple[str, ...] | None = None
    segments: tuple[str, ...] | None = None
    widths: tuple[str, ...] = WIDTHS


def _items(text: str, option: str, choices) -> list[str]:
    """Comma-separated names (commas inside a `[...]` sweep label do not split), deduplicated."""
    names = [part.strip() for part in re.split(r",(?![^\[]*\])", text) if part.strip()]
    if not names:
        raise BenchError(f"{option}: empty; give comma-separated names; valid choices: {', '.join(choices)}")
    return list(dict.fromkeys(names))


def suite_choices(specs) -> dict[str, tuple[str, ...]]:
    """The metrics, segments and `dataset/split` column groups a suite's tables can carry, from its
    specs alone (no record is read): ranking or pointwise metrics by the protocols the methods' classes declare."""
    declared = protocols(specs)
    metrics = (RANKING_METRICS if "ranking" in declared else ()) + (
        POINTWISE_METRICS if "pointwise" in declared else ())
    segments = tuple(dict.fromkeys((RANKING_SEGMENTS if "ranking" in declared else ())
                                   + (POINTWISE_SEGMENTS if "pointwise" in declared else ())))
    labels = split_labels(specs)
    groups = tuple(dict.fromkeys(f"{spec.dataset}/{labels[spec.run_id]}" for spec in specs))
    return {"metrics": metrics, "segments": segments, "groups": groups}


def parse_selection(specs, metrics: str | None, columns: str | None, width: str = "both") -> LatexSelection:
    """--metrics, --columns and --latex-width checked against what the suite can carry, before any work;
    a bad value raises `UnknownChoiceError` naming the option and the valid choices. A column is a
    segment (`user:cold`) or a `dataset/split` group; a bare split name stands for its group when only
    one dataset has it."""
    choices = suite_choices(specs)
    chosen_metrics = None
    if metrics is not None:
        chosen_metrics = tuple(_items(metrics, "--metrics", choices["metrics"]))
        for name in chosen_metrics:
            if name not in choices["metrics"]:
                raise UnknownChoiceError("--metrics value", name, choices["metrics"])
    splits = segments = None
    if columns is not None:
        aliases: dict[str, list[str]] = {}
        for group in choices["groups"]:
            aliases.setdefault(group.partition("/")[2], []).append(group)
        short = {alias: groups[0] for alias, groups in aliases.items() if len(groups) == 1}
        valid = [*choices["groups"], *[a for a in short if a not in choices["groups"]], *choices["segments"]]
        picked_splits, picked_segments = [], []
        for name in _items(columns, "--columns", valid):
            if name in choices["segments"]:
                picked_segments.append(name)
            elif name in choices["groups"] or name in short:
                picked_splits.append(name if name in choices["groups"] else short[name])
            else:
                raise UnknownChoiceError("--columns value", name, valid)
        splits = tuple(dict.fromkeys(picked_splits)) or None
        segments = tuple(picked_segments) or None
    if width not in (*WIDTHS, "both"):
        raise UnknownChoiceError("--latex-width value", width, (*WIDTHS, "both"))
    return LatexSelection(chosen_metrics, splits, segments, WIDTHS if width == "both" else (width,))


# --- a tabular before rendering -----------------------------------------------------------------------

@dataclass
class Grid:
    """Label columns, column groups and blocks of rows; every cell is LaTeX already."""
    labels: list[str]                                  # headers of the row-label columns
    groups: list[tuple[str, list[str]]]                # (group title, "" for none; sub-column headers)
    blocks: list[tuple[str | tuple[str, str], list[list[str]]]]  # (block title or "", rows: labels + values);
    # a title (name, suffix) in the block column sets the suffix on the block's second row
    block_column: str | None = None                    # header of a first column naming the block (page)
    align: str = ""                                    # one char per value column; default all "c"
    facts: dict = field(default_factory=dict)          # what the caption must explain (marks used, seeds)


def drop_empty(grid: Grid) -> Grid:
    """The grid without the value columns that are `--` in every row (a test a one-seed suite cannot run)."""
    n_labels = len(grid.labels)
    rows = [row for _, block in grid.blocks for row in block]
    keep = [j for j in range(sum(len(subs) for _, subs in grid.groups))
            if not rows or any(row[n_labels + j] != "--" for row in rows)]
    groups, start = [], 0
    for title, subs in grid.groups:
        mine = [subs[j - start] for j in keep if start <= j < start + len(subs)]
        if mine:
            groups.append((title, mine))
        start += len(subs)
    blocks = [(title, [row[:n_labels] + [row[n_labels + j] for j in keep] for row in block])
              for title, block in grid.blocks]
    align = "".join(grid.align[j] for j in keep) if grid.align else ""
    return Grid(grid.labels, groups, blocks, grid.block_column, align, grid.facts)


def tabular(grid: Grid) -> str:
    """The grid as a booktabs tabular, written by pandas' `Styler.to_latex`: the column format, the
    `\\toprule` / `\\midrule` / `\\bottomrule` rules (`hrules`), the group titles as `\\multicolumn` over
    their sub-column headers (a two-level column index, `multicol_align`), one row per grid row. Ours, on
    its output (`_booktabs_lines`), what Styler cannot write: the `\\cmidrule(lr)` under each titled group
    and the blocks of rows (a `\\midrule` between blocks, a block's title row)."""
    heads = ([grid.block_column] if grid.block_column is not None else []) + grid.labels
    subs = [(title, sub) for title, names in grid.groups for sub in names]
    titled = any(title for title, _ in grid.groups)
    # a column index with the group titles above the sub-column headers (the label columns untitled)
    columns = (pd.MultiIndex.from_tuples([("", head) for head in heads] + subs) if titled
               else pd.Index(heads + [sub for _, sub in subs]))
    rows, starts = [], []
    for title, block in grid.blocks:
        starts.append(len(rows))
        names = [title]
        if isinstance(title, tuple):  # (name, suffix): the suffix on the block's second row, or beneath
            names = list(title) if len(block) > 1 else [rf"\begin{{tabular}}[t]{{@{{}}l@{{}}}}{title[0]}\\[-2pt]"
                                                        rf"{title[1]}\end{{tabular}}"]
        for index, row in enumerate(block):
            lead = [names[index] if index < len(names) else ""] if grid.block_column is not None else []
            # a line break inside a cell is a space to LaTeX; kept out, each row is one line of Styler's output
            rows.append([str(cell).replace("\n", " ") for cell in lead + row])
    align = grid.align or "c" * len(subs)
    styler = pd.DataFrame(rows, columns=columns, dtype=object).style.hide(axis="index")
    text = styler.to_latex(column_format=f"@{{}}{'l' * len(heads)}{align}@{{}}", hrules=True, multicol_align="c")
    return "\n".join(_booktabs_lines(text.splitlines(), grid, len(heads), titled, starts))


def _booktabs_lines(lines: list[str], grid: Grid, n_labels: int, titled: bool, starts: list[int]) -> list[str]:
    """Styler's tabular lines (one per header or grid row) with what it has no option for, ours: a
    `\\cmidrule(lr)` beneath each titled group (Styler's `clines` rule row-index groups only, with `\\cline`),
    a `\\midrule` between blocks of rows and a block's title row where no block column names it (a single
    `\\multicolumn` over the whole width, which no frame row can be)."""
    body = lines.index(r"\midrule") + 1  # Styler: \begin{tabular}, \toprule, the header rows, \midrule
    out = lines[:body]
    if titled:  # the first header row is the group titles
        rules, col = [], n_labels + 1
        for title, names in _merged(grid.groups):
            if title:
                rules.append(rf"\cmidrule(lr){{{col}-{col + len(names) - 1}}}")
            col += len(names)
        out.insert(3, " ".join(rules))
    width = n_labels + sum(len(names) for _, names in grid.groups)
    bounds = [*starts, sum(len(block) for _, block in grid.blocks)]
    rows, tail = lines[body:body + bounds[-1]], lines[body + bounds[-1]:]  # one line a row; \bottomrule, end
    for number, (title, _) in enumerate(grid.blocks):
        if number:
            out.append(r"\midrule")
        if title and grid.block_column is None:
            out.append(rf"\multicolumn{{{width}}}{{l}}{{\textit{{{title}}}}} \\")
        out += rows[bounds[number]:bounds[number + 1]]
    return out + tail


def _merged(groups: list[tuple[str, list[str]]]) -> list[tuple[str, list[str]]]:
    """The column groups as Styler's header sets them: neighbouring groups of one title under one `\\multicolumn`."""
    out: list[tuple[str, list[str]]] = []
    for title, names in groups:
        if out and out[-1][0] == title:
            out[-1] = (title, out[-1][1] + names)
        else:
            out.append((title, list(names)))
    return out


# value columns one tabular holds at most; a grid with more is set as several tabulars stacked in one float,
# split between column groups (set in the papers' 10 pt and at footnotesize, a page-wide results tabular of
# 12 value columns with its std beneath each mean fits 506 pt, a column-wide one of 5 means fits 241 pt). Ours:
# Styler writes one tabular of every column, whatever its width
MAX_VALUE_COLUMNS = {"page": 12, "column": 5}
# a family table's (text and longer numbers): at most this many value columns a part
FAMILY_VALUE_COLUMNS = {"page": 8, "column": 2}


def split_grid(grid: Grid, max_values: int) -> list[Grid]:
    """The grid as consecutive parts of whole column groups with at most `max_values` value columns each (a
    group wider than that alone), every part with all the rows and labels; one part when it fits."""
    parts, current = [], []
    for index, (_, subs) in enumerate(grid.groups):
        if current and sum(len(grid.groups[i][1]) for i in current) + len(subs) > max_values:
            parts.append(current)
            current = []
        current.append(index)
    parts.append(current)
    if len(parts) == 1:
        return [grid]
    n_labels, starts, start = len(grid.labels), [], 0
    for _, subs in grid.groups:
        starts.append(start)
        start += len(subs)
    out = []
    for indices in parts:
        cols = [starts[i] + j for i in indices for j in range(len(grid.groups[i][1]))]
        blocks = [(title, [row[:n_labels] + [row[n_labels + c] for c in cols] for row in rows])
                  for title, rows in grid.blocks]
        align = "".join(grid.align[c] for c in cols) if grid.align else ""
        out.append(Grid(grid.labels, [grid.groups[i] for i in indices], blocks, grid.block_column, align,
                        grid.facts))
    return out


def tabulars(grid: Grid, width: str, limits: dict[str, int] = MAX_VALUE_COLUMNS) -> str:
    """The grid as one tabular, or as several stacked (`split_grid`) when it has more value columns than
    its width holds."""
    return "\n\\par\\medskip\n".join(tabular(part) for part in split_grid(grid, limits[width]))


def float_env(body: str, caption: str, label: str, width: str, colsep: str = "3pt", notes: str = "") -> str:
    """`table*` (page-wide) or `table` (column-wide), \\footnotesize with `colsep` column padding, caption
    above; `notes` (LaTeX, e.g. the collapsed seeds) set beneath the tabular, smaller. Ours, not Styler's
    `environment` / `caption` / `label`: its float holds exactly one tabular and nothing beneath it, while a
    split grid's float holds several stacked and a table with collapsed seeds lists them under the tabular."""
    env = "table*" if width == "page" else "table"
    beneath = [rf"\par\smallskip{{\scriptsize {notes}\par}}"] if notes else []
    return "\n".join([rf"\begin{{{env}}}[t]", r"\centering", r"\footnotesize", rf"\setlength{{\tabcolsep}}{{{colsep}}}",
                      rf"\caption{{{caption}}}", rf"\label{{{label}}}", body, *beneath, rf"\end{{{env}}}", ""])


def collapsed_notes(grid: Grid, collapsed: pd.DataFrame | None) -> str:
    """The list beneath a result table of the collapsed runs its cells show (`facts["collapsed"]`)."""
    shown = grid.facts.get("collapsed") or set()
    if collapsed is None or collapsed.empty or not shown:
        return ""
    return collapse_latex(collapsed[collapsed["run_id"].isin(shown)])


def label_for(suite: str, kind: str, width: str) -> str:
    name = f"{suite}-{kind}" + ("-column" if width == "column" else "")
    return "tab:" + re.sub(r"[^A-Za-z0-9:-]+", "-", name)


def shorten(text: str, limit: int = 160) -> str:
    """A caption's lead: the first sentence; past `limit`, without its parentheses, then cut at the last
    clause (`; `) or word within `limit`."""
    text = " ".join(str(text).split())
    first = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0].rstrip(".")
    while len(first) > limit and re.search(r" ?\([^()]*\)", first):
        first = re.sub(r" ?\([^()]*\)", "", first)
    if len(first) <= limit:
        return first
    head = first[:limit]
    cut = head.rfind("; ")
    return head[:cut] if cut > limit // 2 else head[:head.rfind(" ")].rstrip(",;:") + "…"


# --- best / second --------------------------------------------------------------------------------------

def rank_marks(values: list[float | None]) -> list[int]:
    """1 (best, ties included), 2 (exactly one value above it, and at least three values) or 0, per value;
    None / NaN are unranked; nothing is marked when fewer than two values or all values tie."""
    present = [v for v in values if v is not None and v == v]
    if len(present) < 2 or len(set(present)) == 1:
        return [0] * len(values)
    marks = []
    for value in values:
        if value is None or value != value:
            marks.append(0)
            continue
        above = sum(other > value for other in present)
        marks.append(1 if above == 0 else 2 if above == 1 and len(present) >= 3 else 0)
    return marks


def stack(top: str, bottom: str, align: str = "c") -> str:
    """Two lines in one cell (a nested one-column tabular, no package needed): a value over its spread,
    the second line smaller; the first line sits on the row's baseline."""
    return rf"\begin{{tabular}}[t]{{@{{}}{align}@{{}}}}{top}\\[-2pt]{{\scriptsize {bottom}}}\end{{tabular}}"


def _split_label(text: str) -> tuple[str, str] | None:
    """`lightgcn [embedding_size=64]` -> (`lightgcn`, `[embedding\\_size=64]`), escaped: a label's sweep or
    width suffix apart from its name; None for a label without one."""
    match = re.fullmatch(r"(\S+) ((?:\[[^\]]*\]|\([^)]*\)).*)", str(text))
    return (escape(match[1]), escape(match[2])) if match else None


def _lines(parts, align: str = "c") -> str:
    """LaTeX cells one a line in one cell (a nested one-column tabular); a single part as it is."""
    parts = list(parts)
    if len(parts) == 1:
        return parts[0]
    return rf"\begin{{tabular}}[t]{{@{{}}{align}@{{}}}}" + "\\\\".join(parts) + r"\end{tabular}"


def _name_and_settings(text: str) -> tuple[str, list[tuple[str, str]]]:
    """`cold_items [candidates=cold]` -> (`cold_items`, [(`candidates`, `cold`)]), unescaped; a suffix
    part without `=` keeps an empty key."""
    name, _, suffix = str(text).partition(" ")
    pairs = []
    for part in suffix.strip("[]() ").split(",") if suffix else []:
        key, _, value = part.rpartition("=")
        pairs.append((key.strip(), value.strip()))
    return name, pairs


def split_title(text: str, narrow: bool = False) -> str:
    """A column group's title; a setting suffix (`cold_items [candidates=cold]`) goes beneath the name,
    smaller, so a long label does not widen its group. `narrow` (a column-wide table of many groups): the
    name is broken at its underscores, one part a line, and the suffix keeps its values only (`[cold]`;
    `narrow_note` names the settings for the caption)."""
    if not narrow:
        parts = _split_label(text)
        return stack(*parts) if parts else escape(text)
    name, settings = _name_and_settings(text)
    lines = [escape(part) for part in name.split("_") if part]
    if settings:  # its own line, set closer (`\\[-2pt]` once joined)
        lines.append(rf"[-2pt]{{\scriptsize [{escape(', '.join(value for _, value in settings))}]}}")
    return _lines(lines)


def narrow_note(texts) -> str:
    """The caption's key to `split_title(..., narrow=True)`'s shortened suffixes: `[all], [cold]: candidates`."""
    keys: dict[str, list[str]] = {}
    for text in texts:
        for key, value in _name_and_settings(text)[1]:
            if key and value not in keys.setdefault(key, []):
                keys[key].append(value)
    return "; ".join(f"{', '.join(f'[{escape(v)}]' for v in values)}: {escape(key)}"
                     for key, values in keys.items())


def row_label(text: str) -> str:
    """A row label; a sweep or width suffix (`lightgcn [embedding_size=64]`, `llminit-full (runs at d=384)`)
    goes beneath the name, smaller, so long labels do not widen the table."""
    parts = _split_label(text)
    return stack(*parts, "l") if parts else escape(text)


def block_label(text: str) -> str | tuple[str, str]:
    """A block's name for the block column: (name, smaller suffix) set on its first two rows, or the name."""
    parts = _split_label(text)
    return (parts[0], rf"{{\scriptsize {parts[1]}}}") if parts else escape(text)


def _value(mean: float, std: float | None, mark: int, sups: str) -> str:
    """The mean (bold best, underlined second) with its marks; with a std, the std beneath (page width).
    Ours, not Styler's `highlight_max` / `textbf:--rwrap`: those wrap the whole cell (its marks and the std
    beneath), best is ranked within a backbone block as printed (`rank_marks`), and Styler has no second
    best."""
    text = f"{mean:.4f}"
    text = rf"\textbf{{{text}}}" if mark == 1 else rf"\underline{{{text}}}" if mark == 2 else text
    text += f"$^{{{sups}}}$" if sups else ""
    if std is not None and std == std:
        return stack(text, rf"$\pm${f'{std:.4f}'.removeprefix('0')}")
    return text


def value_cell(cell: pd.DataFrame, metric: str, mark: int, significant: str | bool, show_std: bool,
               facts: dict) -> str:
    """One result cell from its runs (a row per seed): the mean with its best / second mark, ↑ when
    `significant` is "better" (or True), ↓ when "worse", ‡ when a run stopped at its cap, ◊ when a seed
    collapsed, the std beneath with `show_std`; records in `facts` what the caption must explain (marks used,
    seed counts, whether a std is shown, the collapsed runs shown)."""
    sups = ""
    verdict = "better" if significant is True else significant or ""
    if verdict in ("better", "worse"):
        sups = BETTER if verdict == "better" else WORSE
        facts["sig"] = True
        facts.setdefault("directions", set()).add(verdict)
    if flagged(cell, "capped"):
        sups, facts["cap"] = sups + CAP, True
    if flagged(cell, "collapsed"):
        sups = sups + COLLAPSE
        facts.setdefault("collapsed", set()).update(cell.loc[cell["collapsed"].fillna(False).astype(bool), "run_id"])
    facts["seeds"].add(int(cell["seed"].nunique()))
    std = cell[metric].std(ddof=1) if show_std and len(cell) > 1 else None
    facts["std"] |= std is not None
    return _value(cell[metric].mean(), std, mark, sups)


# --- the tables ---------------------------------------------------------------------------------------

def result_grid(frame: pd.DataFrame, metrics, segments, splits=None, significant=None,
                tested_metric: str = "ndcg@10", show_std: bool = True, block_column: bool = True) -> Grid:
    """Rows (backbone, method) in record order, blocks by backbone; column groups `dataset / split` (the
    split alone when one dataset, the sweep value alone when one split is swept; a lone segment other
    than `overall` is named in the caption),
    sub-columns metric, segment, or both; a sub-column no row of its group has (a segment the split lacks)
    is left out. A cell: the mean over seeds (bold / underlined), ↑ / ↓ where `significant` maps the
    (dataset, split, backbone, method) key to "better" / "worse" on `tested_metric` overall (a set: better),
    ‡ where a run stopped at its epoch cap, and with `show_std` the sample std beneath."""
    significant = as_directions(significant)
    order = frame[["dataset", "split"]].drop_duplicates().itertuples(index=False, name=None)
    pairs = [tuple(s.split("/", 1)) for s in splits] if splits else list(order)
    data = frame[frame["segment"].isin(segments)]
    cells = dict(iter(data.groupby(["backbone", "method", "dataset", "split", "segment"], sort=False)))
    backbones = list(dict.fromkeys(frame["backbone"]))
    methods = {b: list(dict.fromkeys(frame.loc[frame["backbone"] == b, "method"])) for b in backbones}

    def held(column) -> bool:
        dataset, split, segment, metric = column
        return any(key[2:] == (dataset, split, segment) and metric in cell and cell[metric].notna().any()
                   for key, cell in cells.items())

    def sub(segment, metric):
        if len(segments) > 1 and len(metrics) > 1:
            return f"{segment_label(segment, short=True)} {metric_label(metric)}"
        return segment_label(segment, short=True) if len(segments) > 1 else metric_label(metric)

    lone = segments[0] if len(segments) == 1 and segments[0] != "overall" else None
    one_dataset = len({d for d, _ in pairs}) == 1  # then the caption names it and the groups the splits
    # one split swept (ctr_temporal [shots=16], [shots=64]): the caption names it, the groups the sweep values
    bases = {split.split(" [")[0] for _, split in pairs}
    swept = one_dataset and len(bases) == 1 and all(" [" in split for _, split in pairs)
    groups, columns = [], []
    for dataset, split in pairs:
        mine = [c for c in ((dataset, split, seg, m) for seg in segments for m in metrics) if held(c)]
        if mine:
            title = (escape(split.split(" [", 1)[1].removesuffix("]")) if swept else escape(split) if one_dataset
                     else f"{escape(dataset)} / {escape(split)}")
            groups.append((title, [sub(c[2], c[3]) for c in mine]))
            columns += mine
    titled = backbones != ["none"]  # the CTR suite's own models carry no backbone
    facts = {"sig": False, "cap": False, "seeds": set(), "std": False, "segments": segments,
             "dataset": pairs[0][0] if one_dataset and pairs else None, "split": bases.pop() if swept else None, "lone": lone}
    blocks = []
    for backbone in backbones:
        rows_cells = [[cells.get((backbone, m, *c[:3])) for c in columns] for m in methods[backbone]]
        printed = [[None if cell is None or cell[c[3]].isna().all() else float(f"{cell[c[3]].mean():.4f}")
                    for cell, c in zip(row, columns)] for row in rows_cells]
        by_column = [rank_marks(list(column)) for column in zip(*printed)]
        rows = []
        for r, (method, row) in enumerate(zip(methods[backbone], rows_cells)):
            out = [row_label(method)]
            for j, (cell, (dataset, split, segment, metric)) in enumerate(zip(row, columns)):
                if printed[r][j] is None:
                    out.append("--")
                    continue
                marked = (significant.get((dataset, split, backbone, method), "")
                          if metric == tested_metric and segment == "overall" else "")
                out.append(value_cell(cell, metric, by_column[j][r], marked, show_std, facts))
            rows.append(out)
        title = "" if not titled else block_label(backbone) if block_column else escape(backbone)
        blocks.append((title, rows))
    return Grid(["Method"], groups, blocks, "Backbone" if titled and block_column else None, facts=facts)


def _p(p) -> str:
    if p is None or p != p:
        return "--"
    return "$<$0.001" if p < 0.001 else f"{p:.3f}"


def _signed(value: float, digits: int, plus: bool = True) -> str:
    return f"{value:{'+' if plus else ''}.{digits}f}".replace("-", "$-$")


def significance_grid(results: pd.DataFrame, metric: str = "ndcg@10", baseline: str = "random",
                      width: str = "page") -> Grid:
    """Each method vs the baseline, blocks by dataset / split, the backbone named once per run of rows:
    (page) the metric for both, the gain in % and its 95% two-level (seeds, then users) bootstrap interval;
    the primary p raw and corrected over the table's family, the secondary p raw (user-level Wilcoxon, Welch
    t over seeds); the primary test's MDE, the seeds the observed variance calls for (where seeds dominate)
    and Sig.; (column) the gain, its interval, the corrected primary p and Sig., blocks by dataset / split /
    backbone. Sig.: ↑ significantly better, ↓ significantly worse (corrected primary p < 0.05), as the main
    table's marks; p below 0.001 printed as <0.001, never as a raw float."""
    page = width == "page"
    corr = r"$p_{\mathrm{corr}}$"
    gain_heads = [r"Gain \%", r"95\% CI"]
    if page:
        groups = [(metric_label(metric), ["method", escape(baseline), *gain_heads]),
                  ("seeds $\\times$ users", ["$p$", corr]), ("secondary $p$", ["Wilcoxon", "$t$ (seeds)"]),
                  ("", [r"MDE \%", "Seeds", "Sig."])]
    else:  # the metric values are the main table's; the gain, its interval and the verdict
        groups = [(f"{metric_label(metric)} vs.\\ {escape(baseline)}", gain_heads),
                  ("seeds $\\times$ users", [corr, "Sig."])]
    blocks: dict[str, list[list[str]]] = {}
    last: dict[str, str] = {}
    shown: set[tuple] = set()  # the cells with a collapsed seed the table shows (write_tables' flags)
    directions: set[str] = set()
    for _, r in results.iterrows():
        key = (r["Dataset"], r["Split"], r["Backbone"])
        side_a, side_b = bool(r.get("collapsed_a", False)), bool(r.get("collapsed_b", False))
        shown |= {(*key, r["Method"])} if side_a else set()
        shown |= {(*key, baseline)} if side_b else set()
        gain = "--" if r["relative"] != r["relative"] else _signed(100 * r["relative"], 1)
        ci = "--"
        if r["ci_low"] == r["ci_low"] and r["ci_high"] == r["ci_high"] and gain != "--":
            ci = f"[{_signed(100 * r['ci_low'], 1)}, {_signed(100 * r['ci_high'], 1)}]"
        verdict = r.get("direction", "") or ""
        directions |= {verdict} if verdict else set()
        sig = f"${BETTER}$" if verdict == "better" else f"${WORSE}$" if verdict == "worse" else ""
        block = f"{escape(r['Dataset'])} / {escape(r['Split'])}"
        if not page:  # column-wide: the backbone joins the block title, one label column is left
            block += f" / {escape(r['Backbone'])}"
        rows = blocks.setdefault(block, [])
        repeated, last[block] = last.get(block) == r["Backbone"], r["Backbone"]  # a backbone named once
        row = ([] if not page else ["" if repeated else row_label(r["Backbone"])]) + [row_label(r["Method"])]
        sup = f"$^{{{COLLAPSE}}}$"
        if page:
            row += [f"{r['mean_a']:.4f}" + sup * side_a, f"{r['mean_b']:.4f}" + sup * side_b]
        elif gain != "--":  # column-wide: the gain carries the mark of either side
            gain += sup * (side_a or side_b)
        row += [gain, ci if ci == "--" else rf"{{\scriptsize {ci}}}"]
        if page:
            needed = format_seeds_needed(r.to_dict())
            row += [_p(r["p"]), _p(r["p_corr"]), _p(r["wilcoxon_p"]), _p(r["ttest_p"]),
                    "--" if r["mde"] != r["mde"] else rf"$\pm${100 * r['mde']:.1f}",
                    "--" if needed == "—" else r"$\infty$" if needed == "∞" else escape(needed), sig]
        else:
            row += [_p(r["p_corr"]), sig]
        rows.append(row)
    align = "rrrrrrrrrrc" if page else "rrrc"
    return drop_empty(Grid(["Backbone", "Method"] if page else ["Method"], groups, list(blocks.items()), None, align,
                           facts={"sig": bool(directions), "directions": directions, "collapsed": shown}))


IDENTITY_COLUMNS = ("Dataset", "Split", "Backbone", "Encoder")
LABEL_COLUMNS = (*IDENTITY_COLUMNS, "Method")  # a family table's leading columns of these name its rows
_MEAN_STD = re.compile(r"\s*(\S+?)\s*±\s*\S+((?:\s+[†‡◊↑↓])*)\s*")  # a mean ± std, then its marks


def family_collapsed_notes(table: pd.DataFrame, collapsed: pd.DataFrame | None) -> str:
    """The collapsed runs beneath a family table (the catalogue table) whose cells carry ◊: those of the
    (dataset, split, backbone, method) rows it shows."""
    keys = ["Dataset", "Split", "Backbone", "Method"]
    if collapsed is None or collapsed.empty or not set(keys) <= set(table.columns):
        return ""
    marked = table[table.apply(lambda row: any(COLLAPSE_MARK in str(v) for v in row), axis=1)]
    shown = set(marked[keys].itertuples(index=False, name=None))
    return collapse_latex(collapsed[[k in shown for k in zip(collapsed["dataset"], collapsed["split"],
                                                             collapsed["backbone"], collapsed["method"])]])


def compact_family_table(table: pd.DataFrame, page: bool) -> tuple[pd.DataFrame, list[str]]:
    """A family table for LaTeX: its identity columns (dataset, split, backbone, encoder) that hold one value
    in every row go to the caption (returned, in order), and column-wide cells keep their mean only (a
    `mean ± std` cell loses the std, as the column-wide result tables do)."""
    constants = [c for c in IDENTITY_COLUMNS if c in table.columns and len(table) > 1
                 and table[c].nunique(dropna=False) == 1]
    out = table.drop(columns=constants)
    if not page:
        def mean_only(value):
            match = _MEAN_STD.fullmatch(value) if isinstance(value, str) else None
            return match[1] + match[2] if match else value

        out = out.apply(lambda col: col.map(mean_only))
    return out, [str(table[c].iloc[0]) for c in constants]


def _record_head(values: list[str]) -> str:
    """A transposed family table's column head: its record's key values one a line (the last of two
    smaller); a lone value with a setting suffix has the suffix beneath it."""
    if len(values) == 1:
        return split_title(values[0])
    if len(values) == 2:
        return stack(escape(values[0]), escape(values[1]), "r")
    return _lines(map(escape, values), "r")


def frame_grid(table: pd.DataFrame) -> Grid:
    """Any other table (a method family's own, e.g. PtE's offline cost): one header row, text left,
    numbers right; a wide table of at most four rows is set transposed (a row per field, a column per
    record, headed by its leading text fields, one a line), which fits a page or a column where the flat
    one would not. The leading text columns (flat) or the field names (transposed) are the row labels, and
    every value column is a group of its own, so `split_grid` can set a wide one as stacked parts."""
    def cell(value) -> str:
        return escape("--" if value is None or value != value else value)

    keys = []
    for column in table.columns[:3]:
        if column not in LABEL_COLUMNS or pd.api.types.is_numeric_dtype(table[column]):
            break
        keys.append(column)
    if 0 < len(table) <= 4 and len(table.columns) > 2 * (len(table) + 1):
        heads = [_record_head([str(v) for v in row]) if keys else str(i + 1)
                 for i, row in enumerate(table[keys].itertuples(index=False))]
        rows = [[escape(column)] + [cell(v) for v in table[column]]
                for column in table.columns if column not in keys]
        return Grid([" / ".join(escape(k) for k in keys)], [("", [h]) for h in heads], [("", rows)], None,
                    "r" * len(heads))
    # one label column, which every part repeats so that its rows stay identified: the last key (the
    # method) over the others, smaller
    keys = keys or list(table.columns[:1])
    values = [c for c in table.columns if c not in keys]

    def label(row) -> str:
        return stack(cell(row[-1]), ", ".join(cell(v) for v in row[:-1]), "l") if len(row) > 1 else cell(row[0])

    rows = [[label(row[:len(keys)])] + [cell(v) for v in row[len(keys):]]
            for row in table[keys + values].itertuples(index=False)]
    align = "".join("r" if pd.api.types.is_numeric_dtype(table[c]) else "l" for c in values)
    return Grid([label(keys)], [("", [escape(c)]) for c in values], [("", rows)], None, align)


# --- files ----------------------------------------------------------------------------------------------

def _seeds(facts) -> str:
    seeds = sorted(facts.get("seeds") or {1})
    if seeds == [1]:
        return "one seed"
    return f"{seeds[0]} seeds" if len(seeds) == 1 else f"{seeds[0]}--{seeds[-1]} seeds"


def _family(correction: str, family: int, what: str) -> str:
    """The family of a correction, for a caption: "Holm over the 20 comparisons of the significance table"."""
    name = _CORRECTION_NAMES.get(correction, escape(correction))
    if correction == "none":
        return f"uncorrected ({family} comparisons in {what})"
    return f"{name} over the {family} comparisons of {what}"


def sig_key(baseline: str, correction: str, family: int, tested_metric: str = "ndcg@10",
            what: str = "the significance table") -> str:
    """The key of the ↑ / ↓ marks under a LaTeX table."""
    return (rf"$^{{{BETTER}}}$ / $^{{{WORSE}}}$ significantly better / worse than {escape(baseline)} "
            rf"({metric_label(tested_metric)}; two-level bootstrap over seeds and users, "
            rf"{_family(correction, family, what)}, corrected $p<0.05$)")


def result_caption(lead: str, grid: Grid, metrics, segments, baseline: str, correction: str,
                   tested_metric: str = "ndcg@10", family: int = 0) -> str:
    """The lead (the suite's description, shortened), what a cell is, what bold / underline and each mark
    mean, tersely."""
    seeds = _seeds(grid.facts)
    what = "One seed" if seeds == "one seed" else (
        "Mean" + (r" $\pm$ std" if grid.facts["std"] else "") + f" over {seeds}")
    if len(segments) > 1:
        what = (f"{metric_label(metrics[0])} " if len(metrics) == 1 else "") + (
            f"per segment ({segments_phrase(segments)}), " + what[0].lower() + what[1:])
    if grid.facts.get("dataset") and (grid.facts["dataset"] not in lead or grid.facts.get("split")):
        what += f", {escape(grid.facts['dataset'])}" + (f" / {escape(grid.facts['split'])}" if grid.facts.get("split")
                                                        else "")
    if grid.facts.get("lone"):  # one segment other than overall: said once here, not in every group title
        what += f"; {segment_label(grid.facts['lone'])} only"
    scope = "per backbone" if grid.block_column or any(t for t, _ in grid.blocks) else "per column"
    parts = [escape(lead) + ".", what + ".", f"Bold: best {scope}; underlined: second."]
    marks = []
    if grid.facts["sig"]:
        marks.append(sig_key(baseline, correction, family, tested_metric))
    if grid.facts["cap"]:
        marks.append(rf"$^{{{CAP}}}$ stopped at the epoch cap (a lower bound)")
    if grid.facts.get("collapsed"):
        marks.append(rf"$^{{{COLLAPSE}}}$ a collapsed seed (below {COLLAPSE_FRACTION:g}$\times$ its cell's median; "
                     "listed beneath)")
    return " ".join(parts + (["; ".join(marks) + "."] if marks else []))


def significance_caption(lead: str, metric: str, baseline: str, correction: str, width: str,
                         family: int = 0) -> str:
    text = (f"{escape(lead)}. {metric_label(metric)} vs.\\ {escape(baseline)} (same split and backbone); gain in "
            r"\% [95\% CI] and $p$: paired two-level bootstrap (each side's seeds, then the users, resampled); "
            rf"$p_{{\mathrm{{corr}}}}$: {_family(correction, family, 'this table')}; "
            rf"Sig.: ${BETTER}$ better, ${WORSE}$ worse (corrected $p<0.05$)")
    return text + ("; secondary, raw: Wilcoxon signed-rank over users (seed means; exact, Pratt), Welch $t$ over "
                   "seed means; MDE: minimum detectable effect (80\\% power, seeds and users); Seeds: seeds per "
                   "side the observed variance calls for where seeds dominate." if width == "page" else ".")


def _check_present(selection: LatexSelection, frame: pd.DataFrame) -> None:
    """A metric or segment valid for the protocol but in none of the records is named, with what they hold."""
    held = [m for m in (*RANKING_METRICS, *POINTWISE_METRICS) if m in frame.columns and frame[m].notna().any()]
    for name in selection.metrics or ():
        if name not in held:
            raise BenchError(f"--metrics {name}: in none of the suite's records; they hold {', '.join(held)}")
    segments = list(dict.fromkeys(frame["segment"]))
    for name in selection.segments or ():
        if name not in segments:
            raise BenchError(f"--columns {name}: in none of the suite's records; they hold "
                             f"{', '.join(segments)}")


def latex_files(suite, frame: pd.DataFrame, results: pd.DataFrame, significant: dict[tuple, str] | set[tuple],
                family_tables: dict[str, pd.DataFrame], selection: LatexSelection | None = None,
                comment: str = "", correction: str = "holm", tested_metric: str = "ndcg@10",
                default_metrics=("recall@10", "ndcg@10", "recall@20", "ndcg@20"),
                main_note: str = "", collapsed: pd.DataFrame | None = None) -> dict[str, str]:
    """File name -> text of every LaTeX table of a suite: main, segments, significance and the family
    tables, each `<name>.tex` (page-wide, `table*`) and / or `<name>_column.tex` (column-wide, `table`:
    means only, fewer metrics and segments by default, backbones as block rows). `selection` overrides the
    defaults: its metrics and segments go into both result tables, its splits into every table. `main_note`
    (plain text, e.g. the AUC intervals of a pointwise suite) ends the main table's caption. `collapsed`
    (`convergence.collapsed_runs`): the collapsed seeds, listed beneath every table with a cell holding one."""
    selection = selection or LatexSelection()
    _check_present(selection, frame)
    pointwise = frame_protocol(frame) == "pointwise"  # the protocol the runs' method classes declare
    held = list(dict.fromkeys(frame["segment"]))
    lead, short = shorten(suite.description or suite.name), shorten(suite.description or suite.name, 110)
    head = ("% " + comment.replace("\n", "\n% ") + "\n" if comment else "") + (
        f"% Needs \\usepackage{{{','.join(PACKAGES)}}}\n")
    files = {}
    for width in selection.widths:
        page = width == "page"
        suffix = "" if page else "_column"
        # main: overall, the default metrics (two column-wide); segments: one metric per segment, every
        # segment page-wide, the cold / tail ones column-wide
        if pointwise:
            main_metrics, segment_metrics = POINTWISE_METRICS if page else POINTWISE_METRICS[:1], ("auc",)
            segment_choice = POINTWISE_SEGMENTS if page else COLUMN_SEGMENTS_POINTWISE
        else:
            main_metrics, segment_metrics = default_metrics if page else default_metrics[:2], (tested_metric,)
            segment_choice = RANKING_SEGMENTS if page else COLUMN_SEGMENTS
        tables = [("main", selection.metrics or main_metrics, selection.segments or ("overall",)),
                  ("segments", selection.metrics or segment_metrics,
                   selection.segments or tuple(s for s in segment_choice if s in held))]
        for name, metrics, segments in tables:
            grid = result_grid(frame, metrics, segments, selection.splits, significant, tested_metric,
                               show_std=page, block_column=page)
            caption = result_caption(lead if page else short, grid, metrics, segments, suite.baseline,
                                     correction, tested_metric, family=len(results))
            if main_note and name == "main":
                caption += " " + escape(main_note)
            files[f"{name}{suffix}.tex"] = head + float_env(tabulars(grid, width), caption,
                                                            label_for(suite.name, name, width), width,
                                                            notes=collapsed_notes(grid, collapsed))
        if not results.empty:
            chosen = results
            if selection.splits:  # the significance rows name the split without its sweep suffix
                keys = {(d, split.split(" [")[0]) for d, _, split in (s.partition("/") for s in selection.splits)}
                chosen = results[[k in keys for k in zip(results["Dataset"], results["Split"])]]
            if not chosen.empty:
                grid = significance_grid(chosen, tested_metric, suite.baseline, width)
                caption = significance_caption(lead if page else short, tested_metric, suite.baseline, correction,
                                               width, family=len(results))
                if grid.facts.get("collapsed"):
                    caption += (rf" $^{{{COLLAPSE}}}$: that side's cell holds a collapsed seed (below "
                                rf"{COLLAPSE_FRACTION:g}$\times$ its cell's median; listed beneath).")
                notes = ""
                if collapsed is not None and not collapsed.empty and grid.facts.get("collapsed"):
                    cells = grid.facts["collapsed"]
                    notes = collapse_latex(collapsed[[k in cells for k in zip(
                        collapsed["dataset"], collapsed["split"], collapsed["backbone"], collapsed["method"])]])
                files[f"significance{suffix}.tex"] = head + float_env(  # page: 13 columns, 2 pt padding
                    tabular(grid), caption, label_for(suite.name, "significance", width), width,
                    colsep="2pt" if page else "3pt", notes=notes)
        for name, table in family_tables.items():
            notes = family_collapsed_notes(table, collapsed)
            table, constants = compact_family_table(table, page)
            caption = f"{escape(lead if page else short)}: {escape(name.replace('_', ' '))}"
            caption += f" ({escape(', '.join(constants))})." if constants else "."
            if notes:
                caption += (rf" $^{{{COLLAPSE}}}$ a collapsed seed (below {COLLAPSE_FRACTION:g}$\times$ its cell's "
                            "median; listed beneath).")
            files[f"{name}{suffix}.tex"] = head + float_env(tabulars(frame_grid(table), width, FAMILY_VALUE_COLUMNS),
                                                            caption, label_for(suite.name, name, width), width,
                                                            colsep="3pt" if page else "2pt", notes=notes)
    return files
