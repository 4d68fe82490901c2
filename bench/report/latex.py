r"""LaTeX tables a paper can take as they are: booktabs rules, columns grouped under
`\multicolumn{k}{c}{dataset / split}` with a `\cmidrule` beneath and the metrics (R@10, N@10) in the
second header row, rows (backbone, method), every text cell escaped, a caption and a label, in a
page-wide (`table*`) and a column-wide (`table`) variant; the same grid, as text, is the Markdown main table
(`Text`, `grid_frame`), so the Markdown shows what the LaTeX shows.

Built from the records' frame (`tables.collect`) and the numeric significance results, never from the
Markdown strings. Names are display names (`names.yaml` through `bench.report.labels.display`; the key line
in each file's comments maps them to the ids). Bold is decided per column within each backbone block (the
suites compare methods on the same backbone, so a block is the comparable set) by a test, not the maximum
(`leaders`): the best printed value (4 decimals; every metric here is higher-is-better) is bold alone where the
primary paired test (`stats.LeadTest`) says it is significantly ahead of the next, a statistical tie for best
bolds every tied cell, and a column where no cell is significantly behind the best marks nothing. A cell the
suite defines without a record prints "n.r." (not run), one that cannot exist "n/a", and a cell on other users
or seeds than its column's says so beneath its value ("(n=100)", "(1 seed)"). Captions are never cut: a long
description's first clause leads, the rest goes beneath the table (`caption_parts`).

Each tabular is written by pandas' `Styler.to_latex` (`tabular`: column format, booktabs rules, the
`\multicolumn` group titles of a two-level column index). Ours, each where Styler has no way to say it:
the `\cmidrule` under a group title and the blocks of rows (`_booktabs_lines`), the bold mark, the std and
the scale note beneath a mean (`_value`), the splitting of a grid too wide for its measure into stacked
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
    CAP_MARK,
    COLLAPSE,
    NA,
    NOT_RUN,
    NOT_RUN_LATEX,
    POINTWISE_METRICS,
    POINTWISE_SEGMENTS,
    RANKING_METRICS,
    RANKING_SEGMENTS,
    WORSE,
    display,
    display_label,
    display_table,
    escape,
    frame_protocol,
    key_line,
    label_ids,
    metric_label,
    protocols,
    segment_label,
    segment_name,
    segments_phrase,
    split_labels,
    split_segment_note,
    table_used,
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


def caption_parts(text: str, limit: int = 160) -> tuple[str, str]:
    """(lead, detail) of a suite's description for a caption: its first sentence, whole; where that is longer
    than `limit`, the lead is its first clause (up to the first ": " or "; " outside parentheses) and the
    detail the rest of the sentence, which the notes beneath the table carry. Nothing is ever cut off."""
    text = " ".join(str(text).split())
    first = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0].rstrip(".")
    if len(first) <= limit:
        return first, ""
    depth = 0
    for index, char in enumerate(first):
        depth += {"(": 1, "[": 1, "{": 1, ")": -1, "]": -1, "}": -1}.get(char, 0)
        if depth == 0 and first[index:index + 2] in (": ", "; "):
            return first[:index], first[index + 2:]
    return first, ""


def detail_note(detail: str) -> str:
    """The caption's detail (`caption_parts`) as a sentence for the notes beneath a table, LaTeX."""
    if not detail:
        return ""
    first = detail.split(" ", 1)[0]
    # a sentence starts upper-case, unless with an identifier (`half_history`), which keeps its spelling
    return escape((detail[:1].upper() + detail[1:] if first.isalpha() else detail) + ".")


# --- cells: one text for LaTeX and Markdown ---------------------------------------------------------------

class Text(str):
    """A cell, header or title as LaTeX (the string itself) that also carries its plain text (`plain`): a
    table's grid is built once and set as the LaTeX tabular and as the Markdown table (`grid_frame`)."""

    plain: str

    def __new__(cls, latex: str, plain: str | None = None):
        text = super().__new__(cls, latex)
        text.plain = str(latex) if plain is None else plain
        return text


def plain(value) -> str:
    """The plain text of a grid cell or title (a `Text`'s, a pair's joined, anything else as it is)."""
    if isinstance(value, tuple):
        return " ".join(plain(part) for part in value if plain(part))
    return value.plain if isinstance(value, Text) else str(value)


def missing(kind: str) -> Text:
    """A cell without a value: "n/a" (it cannot exist) or "not run" (the suite defines it, no record yet)."""
    return Text(NOT_RUN_LATEX, NOT_RUN) if kind == NOT_RUN else Text(NA, NA)


def grid_frame(grid: Grid) -> pd.DataFrame:
    """The grid as a Markdown table's frame: the block column (its title on every row of its block), the label
    columns, then one column per value column headed `group: sub`; every cell its plain text."""
    heads = ([plain(grid.block_column)] if grid.block_column is not None else []) + [plain(h) for h in grid.labels]
    columns = heads + [f"{plain(title)}: {plain(sub)}" if plain(title) else plain(sub)
                       for title, subs in grid.groups for sub in subs]
    rows = [([plain(title)] if grid.block_column is not None else []) + [plain(cell) for cell in row]
            for title, block in grid.blocks for row in block]
    return pd.DataFrame(rows, columns=columns, dtype=object)


# --- best (bold) ----------------------------------------------------------------------------------------

def leaders(values: list[float | None], ahead=None) -> set[int]:
    """The cells a column bolds: the best (highest printed value) alone where it is significantly ahead of the
    next (`ahead(best, other)`: the primary test, `stats.LeadTest`), else with every next one down until the
    first it is significantly ahead of (a tie for best bolds every tied cell); nothing where no cell is
    significantly behind the best, fewer than two values, or no test (`ahead` None). None / NaN are unranked."""
    present = sorted((i for i, v in enumerate(values) if v is not None and v == v), key=lambda i: -values[i])
    if ahead is None or len(present) < 2 or values[present[0]] == values[present[-1]]:
        return set()
    best, group = present[0], {present[0]}
    for index in present[1:]:
        if values[index] != values[best] and ahead(best, index):
            break
        group.add(index)
    return set() if len(group) == len(present) else group


def column_leaders(cells: list[pd.DataFrame | None], printed: list[float | None], metric: str, segment: str,
                   lead_test=None) -> set[int]:
    """`leaders` of one column of cells (frames of runs; None where no value), tested by `lead_test`
    (`stats.LeadTest`) on the metric of the segment."""
    if lead_test is None:
        return set()
    return leaders(printed, lambda a, b: lead_test(cells[a], cells[b], metric, segment))


def stack(top: str, bottom: str, align: str = "c") -> str:
    """Two lines in one cell (a nested one-column tabular, no package needed): a value over its spread,
    the second line smaller; the first line sits on the row's baseline."""
    return rf"\begin{{tabular}}[t]{{@{{}}{align}@{{}}}}{top}\\[-2pt]{{\scriptsize {bottom}}}\end{{tabular}}"


def _label_parts(text: str) -> tuple[str, str] | None:
    """`LightGCN [embedding_size=64]` -> (`LightGCN`, `[embedding_size=64]`): a label's sweep or width suffix
    (from its first bracket or parenthesis after a space) apart from its name; None for a label without one."""
    match = re.fullmatch(r"(.+?) ((?:\[[^\]]*\]|\([^)]*\)).*)", str(text))
    return (match[1], match[2]) if match else None


def _split_label(text: str) -> tuple[str, str] | None:
    """`_label_parts`, escaped."""
    parts = _label_parts(text)
    return (escape(parts[0]), escape(parts[1])) if parts else None


def _lines(parts, align: str = "c") -> str:
    """LaTeX cells one a line in one cell (a nested one-column tabular); a single part as it is."""
    parts = list(parts)
    if len(parts) == 1:
        return parts[0]
    return rf"\begin{{tabular}}[t]{{@{{}}{align}@{{}}}}" + "\\\\".join(parts) + r"\end{tabular}"


def _name_and_settings(text: str) -> tuple[str, list[tuple[str, str]]]:
    """`cold_items [candidates=cold]` -> (`cold_items`, [(`candidates`, `cold`)]), unescaped; a suffix
    part without `=` keeps an empty key."""
    name, _, suffix = str(text).partition(" [")
    pairs = []
    for part in suffix.strip("[]() ").split(",") if suffix else []:
        key, _, value = part.rpartition("=")
        pairs.append((key.strip(), value.strip()))
    return name, pairs


def split_title(text: str, narrow: bool = False) -> str:
    """A column group's title; a setting suffix (`Cold items [cold candidates]`) goes beneath the name,
    smaller, so a long label does not widen its group. `narrow` (a column-wide table of many groups): the
    name is broken at its spaces and underscores, one part a line, and the suffix keeps its values only
    (`[cold]`; `narrow_note` names the settings for the caption)."""
    if not narrow:
        parts = _split_label(text)
        return stack(*parts) if parts else escape(text)
    name, settings = _name_and_settings(text)
    lines = [escape(part) for part in re.split(r"[_ ]", name) if part]
    if settings:  # smaller, set closer (`\\[-2pt]` once joined), a setting's words one a line
        words = f"[{', '.join(value for _, value in settings)}]".split(" ")
        lines += [rf"[-2pt]{{\scriptsize {escape(word)}}}" for word in words]
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


def row_label(text: str) -> Text:
    """A row label (plain text: a display name), escaped; a sweep or width suffix (`LightGCN
    [embedding_size=64]`, `LLMInit-full (runs at d=384)`) goes beneath the name, smaller, so long labels do
    not widen the table."""
    parts = _split_label(text)
    return Text(stack(*parts, "l") if parts else escape(text), str(text))


def block_label(text: str) -> Text | tuple[Text, Text]:
    """A block's name for the block column: (name, smaller suffix) set on its first two rows, or the name."""
    parts = _label_parts(text)
    if not parts:
        return Text(escape(text), str(text))
    return Text(escape(parts[0]), parts[0]), Text(rf"{{\scriptsize {escape(parts[1])}}}", parts[1])


def title_text(label: str, narrow: bool = False) -> Text:
    """A column group's title from a display label (`Cold items [cold candidates]`)."""
    return Text(split_title(label, narrow), label)


def _value(mean: float, std: float | None, bold: bool, sups: str, note: str = "") -> str:
    """The mean (bold where it leads its column) with its marks; beneath it, smaller, the std (page width)
    and a note of the users / seeds it rests on where they differ from the table's. Ours, not Styler's
    `highlight_max` / `textbf:--rwrap`: those wrap the whole cell (its marks and the std beneath), and bold
    here is decided by a significance test (`leaders`), not by the maximum."""
    text = f"{mean:.4f}"
    text = rf"\textbf{{{text}}}" if bold else text
    text += f"$^{{{sups}}}$" if sups else ""
    beneath = []
    if std is not None and std == std:
        beneath.append(rf"$\pm${f'{std:.4f}'.removeprefix('0')}")
    if note:
        beneath.append(escape(note))
    if not beneath:
        return text
    return rf"\begin{{tabular}}[t]{{@{{}}c@{{}}}}{text}" + "".join(
        rf"\\[-2pt]{{\scriptsize {line}}}" for line in beneath) + r"\end{tabular}"


def table_scale(cells) -> tuple[int | None, dict]:
    """The table's seeds (the most common seed count of its cells) and users per column key (the most common
    `n_users` of the cells of each key) from (key, cell frame) pairs: a cell that differs says so
    (`cell_note`)."""
    seeds: dict[int, int] = {}
    users: dict[tuple, dict[int, int]] = {}
    for key, cell in cells:
        count = int(cell["seed"].nunique())
        seeds[count] = seeds.get(count, 0) + 1
        n = _users(cell)
        if n:
            users.setdefault(key, {})[n] = users.setdefault(key, {}).get(n, 0) + 1
    return _mode(seeds), {key: _mode(counts) for key, counts in users.items()}


def _mode(counts: dict[int, int]) -> int | None:
    """The most common value (the larger of equally common ones); None for none."""
    return max(counts, key=lambda v: (counts[v], v)) if counts else None


def _users(cell: pd.DataFrame) -> int:
    if "n_users" not in cell.columns:
        return 0
    values = pd.to_numeric(cell["n_users"], errors="coerce").dropna()
    return int(values.max()) if len(values) else 0


def cell_note(cell: pd.DataFrame, seeds: int | None, users: int | None) -> str:
    """"(n=100)", "(1 seed)", "(n=100, 1 seed)": the users and seeds a cell rests on where they differ from its
    table's (`table_scale`); "" where they do not."""
    parts = []
    n = _users(cell)
    if users and n and n != users:
        parts.append(f"n={n}")
    count = int(cell["seed"].nunique())
    if seeds and count != seeds:
        parts.append(f"{count} seed" + ("" if count == 1 else "s"))
    return f"({', '.join(parts)})" if parts else ""


def value_cell(cell: pd.DataFrame, metric: str, bold: bool, significant: str | bool, show_std: bool,
               facts: dict, note: str = "") -> Text:
    """One result cell from its runs (a row per seed): the mean, bold where it leads its column, ↑ when
    `significant` is "better" (or True), ↓ when "worse", ‡ when a run stopped at its cap, ◊ when a seed
    collapsed, the std with `show_std` (beneath it in LaTeX) and `note` (its users / seeds); records in `facts`
    what the caption must explain (marks used, seed counts, whether a std is shown, the collapsed runs shown)."""
    sups, marks = "", ""
    verdict = "better" if significant is True else significant or ""
    if verdict in ("better", "worse"):
        sups, marks = (BETTER, " ↑") if verdict == "better" else (WORSE, " ↓")
        facts["sig"] = True
        facts.setdefault("directions", set()).add(verdict)
    if flagged(cell, "capped"):
        sups, marks, facts["cap"] = sups + CAP, marks + f" {CAP_MARK}", True
    if flagged(cell, "collapsed"):
        sups, marks = sups + COLLAPSE, marks + f" {COLLAPSE_MARK}"
        facts.setdefault("collapsed", set()).update(cell.loc[cell["collapsed"].fillna(False).astype(bool), "run_id"])
    facts["seeds"].add(int(cell["seed"].nunique()))
    facts["bolded"] = facts.get("bolded", False) or bold
    facts["noted"] = facts.get("noted", False) or bool(note)
    std = cell[metric].std(ddof=1) if show_std and len(cell) > 1 else None
    facts["std"] |= std is not None
    mean = cell[metric].mean()
    text = f"**{mean:.4f}**" if bold else f"{mean:.4f}"
    text += (f" ± {std:.4f}" if std is not None and std == std else "") + marks + (f" {note}" if note else "")
    return Text(_value(mean, std, bold, sups, note), text)


def missing_cell(kind: str, facts: dict) -> Text:
    """A cell without a value, recorded in `facts` for the notes (`missing_note`)."""
    facts.setdefault("missing", set()).add(kind)
    return missing(kind)


def missing_note(facts: dict, latex: bool = True) -> str:
    """What n/a and not run (n.r.) mean, for the cells the table printed."""
    kinds = facts.get("missing") or set()
    parts = []
    if NA in kinds:
        parts.append(f"{NA}: no such cell (the suite does not run this method there, or the metric or segment "
                     "does not exist for it)")
    if NOT_RUN in kinds:
        parts.append(f"{NOT_RUN_LATEX if latex else NOT_RUN}: a run the suite defines whose record is not stored "
                     "yet (listed under Not run yet)")
    text = "; ".join(parts)
    return (escape(text) + ".") if latex and text else text


# --- the tables ---------------------------------------------------------------------------------------

def result_grid(frame: pd.DataFrame, metrics, segments, splits=None, significant=None,
                tested_metric: str = "ndcg@10", show_std: bool = True, block_column: bool = True,
                defined=None, lead_test=None) -> Grid:
    """Rows (backbone, method) in record order, blocks by backbone; column groups `dataset / split` (the
    split alone when one dataset, the sweep value alone when one split is swept; a lone segment other
    than `overall` is named in the caption),
    sub-columns metric, segment, or both; a sub-column no row of its group has (a segment the split lacks)
    is left out. A cell: the mean over seeds, bold where it leads its column within its backbone
    (`leaders`, tested by `lead_test`), ↑ / ↓ where `significant` maps the (dataset, split, backbone, method)
    key to "better" / "worse" on `tested_metric` overall (a set: better), ‡ where a run stopped at its epoch
    cap, with `show_std` the sample std (beneath it in LaTeX), and the users / seeds it rests on where they
    differ from the table's. `defined`: the (dataset, split, backbone, method) cells the suite defines, in
    order: one without a record prints "not run" (its row and split shown even with no record at all), a cell
    outside them "n/a". Names are display names (`names.yaml`)."""
    significant = as_directions(significant)
    defined = list(dict.fromkeys(defined or ()))
    order = list(frame[["dataset", "split"]].drop_duplicates().itertuples(index=False, name=None))
    order += [key for key in dict.fromkeys(k[:2] for k in defined) if key not in order]
    pairs = [tuple(s.split("/", 1)) for s in splits] if splits else order
    data = frame[frame["segment"].isin(segments)]
    cells = dict(iter(data.groupby(["backbone", "method", "dataset", "split", "segment"], sort=False)))
    stored = set(frame[["backbone", "method", "dataset", "split"]].itertuples(index=False, name=None))
    shown = [k for k in defined if k[:2] in pairs]
    expected = {(b, m, d, s) for d, s, b, m in shown}
    backbones = list(dict.fromkeys([*frame["backbone"], *(k[2] for k in shown)]))
    methods = {b: list(dict.fromkeys([*frame.loc[frame["backbone"] == b, "method"], *(k[3] for k in shown
                                                                                     if k[2] == b)]))
               for b in backbones}

    def held(column) -> bool:
        dataset, split, segment, metric = column
        if any(key[2:] == (dataset, split, segment) and metric in cell and cell[metric].notna().any()
               for key, cell in cells.items()):
            return True
        # a split the suite defines with no record stored yet: its columns show "not run"
        return not any(k[2:] == (dataset, split) for k in stored) and any(k[2:] == (dataset, split)
                                                                           for k in expected)

    def sub(segment, metric, split):
        name = segment_name(segment, split)
        if len(segments) > 1 and len(metrics) > 1:
            return Text(f"{segment_label(segment, short=True)} {metric_label(metric)}",
                        f"{name} {display('metric', metric)}")
        if len(segments) > 1:
            return Text(segment_label(segment, short=True), name)
        return Text(metric_label(metric), display("metric", metric))

    lone = segments[0] if len(segments) == 1 and segments[0] != "overall" else None
    one_dataset = len({d for d, _ in pairs}) == 1  # then the caption names it and the groups the splits
    # one split swept (ctr_temporal [shots=16], [shots=64]): the caption names it, the groups the sweep values
    bases = {split.split(" [")[0] for _, split in pairs}
    swept = one_dataset and len(bases) == 1 and all(" [" in split for _, split in pairs)
    groups, columns = [], []
    for dataset, split in pairs:
        mine = [c for c in ((dataset, split, seg, m) for seg in segments for m in metrics) if held(c)]
        if mine:
            name = display_label("split", split)
            if swept:
                title = sweep_title(split)
            else:
                title = title_text(name if one_dataset else f"{dataset} / {name}")
            groups.append((title, [sub(c[2], c[3], split) for c in mine]))
            columns += mine
    titled = backbones != ["none"]  # the CTR suite's own models carry no backbone
    seeds, users = table_scale(((k[2:], c) for k, c in cells.items()))
    facts = {"sig": False, "cap": False, "seeds": set(), "std": False, "segments": segments, "table_seeds": seeds,
             "dataset": pairs[0][0] if one_dataset and pairs else None, "split": bases.pop() if swept else None,
             "lone": lone, "bold": lead_test is not None,
             "used": {"split": [label_ids(s) for _, s in pairs], "backbone": [label_ids(b) for b in backbones],
                      "method": [label_ids(m) for ms in methods.values() for m in ms],
                      "segment": [(seg, s) for _, s in pairs for seg in segments if seg != "overall"]}}
    blocks = []
    for backbone in backbones:
        rows_cells = [[cells.get((backbone, m, *c[:3])) for c in columns] for m in methods[backbone]]
        printed = [[None if cell is None or cell[c[3]].isna().all() else float(f"{cell[c[3]].mean():.4f}")
                    for cell, c in zip(row, columns)] for row in rows_cells]
        bold = [column_leaders([row[j] for row in rows_cells], [row[j] for row in printed], c[3], c[2], lead_test)
                for j, c in enumerate(columns)]
        rows = []
        for r, (method, row) in enumerate(zip(methods[backbone], rows_cells)):
            out = [row_label(display_label("method", method))]
            for j, (cell, (dataset, split, segment, metric)) in enumerate(zip(row, columns)):
                if printed[r][j] is None:
                    absent = (backbone, method, dataset, split) in expected and (
                        backbone, method, dataset, split) not in stored
                    out.append(missing_cell(NOT_RUN if absent else NA, facts))
                    continue
                marked = (significant.get((dataset, split, backbone, method), "")
                          if metric == tested_metric and segment == "overall" else "")
                note = cell_note(cell, seeds, users.get((dataset, split, segment)))
                out.append(value_cell(cell, metric, r in bold[j], marked, show_std, facts, note))
            rows.append(out)
        name = display_label("backbone", backbone)
        title = "" if not titled else block_label(name) if block_column else Text(escape(name), name)
        blocks.append((title, rows))
    if not titled:  # no backbone printed: none to key
        facts["used"].pop("backbone")
    if swept and any(split.endswith("[shots=0]") for _, split in pairs):
        # what shots 0 is, per row: a trained row learns from every training pair, an untrained one answers zero-shot
        facts["shots0"] = {display_label("method", key[1]): "zero-shot" if cell["trainable"].max() == 0 else "all pairs"
                           for key, cell in cells.items() if key[3].endswith("[shots=0]") and "trainable" in cell}
    return Grid(["Method"], groups, blocks, "Backbone" if titled and block_column else None, facts=facts)


def shots_note(facts: dict, latex: bool = True) -> str:
    """What the shots-0 column holds, per row kind (`result_grid`'s `shots0`): the rows trained on every
    training pair, those asked zero-shot; "" without that column."""
    kinds = facts.get("shots0") or {}
    if not kinds:
        return ""
    trained = [m for m, kind in kinds.items() if kind == "all pairs"]
    zero = [m for m, kind in kinds.items() if kind == "zero-shot"]
    parts = ([f"{', '.join(trained)} trained on every training pair"] if trained else []) + (
        [f"{', '.join(zero)} asked zero-shot (no training pair)"] if zero else [])
    text = (f"All pairs / zero-shot (shots = 0): {'; '.join(parts)}; the few-shot rows do not run there "
            f"({NA})")
    return escape(text) + "." if latex else text


def sweep_title(split: str) -> Text:
    """A swept split's group title: its setting value (`ctr_temporal [shots=16]` -> "16 shots"; shots 0, what
    CF rows train on every pair at and ICL answers zero-shot at: "all pairs / zero-shot")."""
    setting = split.split(" [", 1)[1].removesuffix("]")
    key, _, value = setting.partition("=")
    if key == "shots":
        if value == "0":  # on two lines: the title of one or two value columns
            return Text(_lines(["all pairs /", "zero-shot"]), "all pairs / zero-shot")
        return Text(f"{escape(value)} shots", f"{value} shots")
    name = display("setting", setting)
    return Text(escape(name), name)


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
        groups = [(metric_label(metric), ["method", escape(display("method", baseline)), *gain_heads]),
                  ("seeds $\\times$ users", ["$p$", corr]), ("secondary $p$", ["Wilcoxon", "$t$ (seeds)"]),
                  ("", [r"MDE \%", "Seeds", "Sig."])]
    else:  # the metric values are the main table's; the gain, its interval and the verdict
        groups = [(f"{metric_label(metric)} vs.\\ {escape(display('method', baseline))}", gain_heads),
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
        block = f"{escape(r['Dataset'])} / {escape(display_label('split', r['Split']))}"
        if not page:  # column-wide: the backbone joins the block title, one label column is left
            block += f" / {escape(display_label('backbone', r['Backbone']))}"
        rows = blocks.setdefault(block, [])
        repeated, last[block] = last.get(block) == r["Backbone"], r["Backbone"]  # a backbone named once
        row = ([] if not page else ["" if repeated else row_label(display_label("backbone", r["Backbone"]))]) + [
            row_label(display_label("method", r["Method"]))]
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
    used = {"split": [label_ids(v) for v in results["Split"]], "backbone": [label_ids(v) for v in results["Backbone"]],
            "method": [baseline, *(label_ids(v) for v in results["Method"])]}
    return drop_empty(Grid(["Backbone", "Method"] if page else ["Method"], groups, list(blocks.items()), None, align,
                           facts={"sig": bool(directions), "directions": directions, "collapsed": shown,
                                  "used": used}))


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
    smaller); a value's setting suffix (`PtE-init [user_embedding=add]`) beneath it, smaller, so that it does
    not widen the column."""
    if len(values) == 1:
        return split_title(values[0])
    lines = []
    for index, value in enumerate(values):
        parts = _label_parts(value)
        small = len(values) == 2 and index == 1
        name = escape(parts[0] if parts else value)
        lines.append(rf"{{\scriptsize {name}}}" if small else name)
        if parts:  # a setting's value on a line of its own (`[user_embedding=` over `none]`)
            lines += [rf"{{\scriptsize {escape(piece)}}}" for piece in re.split(r"(?<==)", parts[1]) if piece]
    return _lines(lines, "r")


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
        # a setting suffix of the last key (`PtE [heldout_users=none]`) joins the smaller line beneath
        parts = _label_parts(row[-1]) if isinstance(row[-1], str) else None
        top, rest = (cell(parts[0]), [cell(parts[1])]) if parts else (cell(row[-1]), [])
        rest += [cell(v) for v in row[:-1]]
        # a suffix, or keys too long for one small line: each a smaller line of its own, so the label stays narrow
        if len(rest) > 1 and (parts or sum(len(str(v)) for v in row[:-1]) > 28):
            return rf"\begin{{tabular}}[t]{{@{{}}l@{{}}}}{top}" + "".join(
                rf"\\[-2pt]{{\scriptsize {part}}}" for part in rest) + r"\end{tabular}"
        return stack(top, ", ".join(rest), "l") if rest else top

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
    return (rf"$^{{{BETTER}}}$ / $^{{{WORSE}}}$ significantly better / worse than {escape(display('method', baseline))} "
            rf"({metric_label(tested_metric)}; two-level bootstrap over seeds and users, "
            rf"{_family(correction, family, what)}, corrected $p<0.05$)")


def bold_key(scope: str) -> str:
    """What bold means (`leaders`), for a caption."""
    return (f"Bold: best {scope} where significantly ahead of the next (two-level bootstrap over seeds and users, "
            r"$p<0.05$); a tie for best bolds every tied cell.")


def result_caption(lead: str, grid: Grid, metrics, segments, baseline: str, correction: str,
                   tested_metric: str = "ndcg@10", family: int = 0) -> str:
    """The lead (the suite's description's first sentence or clause, whole: `caption_parts`), what a cell is,
    what bold and each mark mean, tersely."""
    count = grid.facts.get("table_seeds")
    seeds = _seeds(grid.facts) if not count else "one seed" if count == 1 else f"{count} seeds"
    what = "One seed" if seeds == "one seed" else (
        "Mean" + (r" $\pm$ std" if grid.facts["std"] else "") + f" over {seeds}")
    if len(segments) > 1:
        what = (f"{metric_label(metrics[0])} " if len(metrics) == 1 else "") + (
            f"per segment ({segments_phrase(segments)}), " + what[0].lower() + what[1:])
    if grid.facts.get("dataset") and (grid.facts["dataset"] not in lead or grid.facts.get("split")):
        split = grid.facts.get("split")
        what += f", {escape(grid.facts['dataset'])}" + (f" / {escape(display('split', split))}" if split else "")
    if grid.facts.get("lone"):  # one segment other than overall: said once here, not in every group title
        what += f"; {segment_label(grid.facts['lone'])} only"
    if grid.facts.get("noted"):
        what += "; a cell on other users or seeds says so"
    scope = "per backbone" if grid.block_column or any(t for t, _ in grid.blocks) else "per column"
    parts = [escape(lead) + ".", what + "."] + ([bold_key(scope)] if grid.facts.get("bold") else [])
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
    text = (f"{escape(lead)}. {metric_label(metric)} vs.\\ {escape(display('method', baseline))} (same split and "
            r"backbone); gain in \% [95\% CI] and $p$: paired two-level bootstrap (each side's seeds, then the users, "
            rf"resampled); $p_{{\mathrm{{corr}}}}$: {_family(correction, family, 'this table')}; "
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


def tex_head(comment: str, used: dict | None = None) -> str:
    """The comment lines atop a .tex: the suite's notes and sources (`comment`), the key from the display names
    the table prints to the ids (`key_line`), the packages it needs."""
    key = key_line(used or {})
    text = "\n".join(part for part in (comment, key) if part)
    return ("% " + text.replace("\n", "\n% ") + "\n" if text else "") + f"% Needs \\usepackage{{{','.join(PACKAGES)}}}\n"


def joined_notes(*parts: str) -> str:
    """Notes beneath a table (LaTeX), the non-empty parts one after another."""
    return " ".join(part for part in parts if part)


def main_grid(frame: pd.DataFrame, width: str, selection: LatexSelection | None = None, significant=None,
              tested_metric: str = "ndcg@10", default_metrics=("recall@10", "ndcg@10", "recall@20", "ndcg@20"),
              defined=None, lead_test=None) -> tuple[Grid, tuple, tuple]:
    """(grid, metrics, segments) of a suite's main result table at a width: overall, the default metrics
    (ranking: the four page-wide, two column-wide; pointwise: AUC and UAUC page-wide, AUC column-wide) unless
    `selection` names others. The Markdown main table is the page-wide grid with the defaults (`grid_frame`)."""
    selection = selection or LatexSelection()
    page = width == "page"
    if frame_protocol(frame) == "pointwise":
        metrics = POINTWISE_METRICS if page else POINTWISE_METRICS[:1]
    else:
        metrics = default_metrics if page else default_metrics[:2]
    metrics, segments = tuple(selection.metrics or metrics), tuple(selection.segments or ("overall",))
    grid = result_grid(frame, metrics, segments, selection.splits, significant, tested_metric, show_std=page,
                       block_column=page, defined=defined, lead_test=lead_test)
    return grid, metrics, segments


def latex_files(suite, frame: pd.DataFrame, results: pd.DataFrame, significant: dict[tuple, str] | set[tuple],
                family_tables: dict[str, pd.DataFrame], selection: LatexSelection | None = None,
                comment: str = "", correction: str = "holm", tested_metric: str = "ndcg@10",
                default_metrics=("recall@10", "ndcg@10", "recall@20", "ndcg@20"),
                main_note: str = "", collapsed: pd.DataFrame | None = None, defined=None,
                lead_test=None) -> dict[str, str]:
    """File name -> text of every LaTeX table of a suite: main, segments, significance and the family
    tables, each `<name>.tex` (page-wide, `table*`) and / or `<name>_column.tex` (column-wide, `table`:
    means only, fewer metrics and segments by default, backbones as block rows). `selection` overrides the
    defaults: its metrics and segments go into both result tables, its splits into every table. `main_note`
    (plain text, e.g. the AUC intervals of a pointwise suite) ends the main table's caption. `collapsed`
    (`convergence.collapsed_runs`): the collapsed seeds, listed beneath every table with a cell holding one.
    `defined` (the suite's cells, `result_grid`) tells "not run" from "n/a"; `lead_test` (`stats.LeadTest`)
    decides bold. Captions are never cut: a long description's detail goes beneath the table."""
    selection = selection or LatexSelection()
    _check_present(selection, frame)
    pointwise = frame_protocol(frame) == "pointwise"  # the protocol the runs' method classes declare
    held = list(dict.fromkeys(frame["segment"]))
    files = {}
    for width in selection.widths:
        page = width == "page"
        suffix = "" if page else "_column"
        lead, detail = caption_parts(suite.description or suite.name, 160 if page else 110)
        # segments: one metric per segment, every segment page-wide, the cold / tail ones column-wide
        if pointwise:
            segment_metrics, segment_choice = ("auc",), POINTWISE_SEGMENTS if page else COLUMN_SEGMENTS_POINTWISE
        else:
            segment_metrics, segment_choice = (tested_metric,), RANKING_SEGMENTS if page else COLUMN_SEGMENTS
        segment_metrics = tuple(selection.metrics or segment_metrics)
        segments = tuple(selection.segments or tuple(s for s in segment_choice if s in held))
        tables = [("main", *main_grid(frame, width, selection, significant, tested_metric, default_metrics, defined,
                                      lead_test)),
                  ("segments", result_grid(frame, segment_metrics, segments, selection.splits, significant,
                                           tested_metric, show_std=page, block_column=page, defined=defined,
                                           lead_test=lead_test), segment_metrics, segments)]
        for name, grid, metrics, chosen in tables:
            caption = result_caption(lead, grid, metrics, chosen, suite.baseline, correction, tested_metric,
                                     family=len(results))
            if main_note and name == "main":
                caption += " " + escape(main_note)
            renamed = split_segment_note(grid.facts["used"]["split"]) if name == "segments" else ""
            notes = joined_notes(detail_note(detail), shots_note(grid.facts), missing_note(grid.facts),
                                 escape(f"Segments named otherwise: {renamed}.") if renamed else "",
                                 collapsed_notes(grid, collapsed))
            files[f"{name}{suffix}.tex"] = tex_head(comment, grid.facts.get("used")) + float_env(
                tabulars(grid, width), caption, label_for(suite.name, name, width), width, notes=notes)
        if not results.empty:
            chosen = results
            if selection.splits:  # the significance rows name the split without its sweep suffix
                keys = {(d, split.split(" [")[0]) for d, _, split in (s.partition("/") for s in selection.splits)}
                chosen = results[[k in keys for k in zip(results["Dataset"], results["Split"])]]
            if not chosen.empty:
                grid = significance_grid(chosen, tested_metric, suite.baseline, width)
                caption = significance_caption(lead, tested_metric, suite.baseline, correction, width,
                                               family=len(results))
                if grid.facts.get("collapsed"):
                    caption += (rf" $^{{{COLLAPSE}}}$: that side's cell holds a collapsed seed (below "
                                rf"{COLLAPSE_FRACTION:g}$\times$ its cell's median; listed beneath).")
                notes = ""
                if collapsed is not None and not collapsed.empty and grid.facts.get("collapsed"):
                    cells = grid.facts["collapsed"]
                    notes = collapse_latex(collapsed[[k in cells for k in zip(
                        collapsed["dataset"], collapsed["split"], collapsed["backbone"], collapsed["method"])]])
                files[f"significance{suffix}.tex"] = tex_head(comment, grid.facts.get("used")) + float_env(
                    tabular(grid), caption, label_for(suite.name, "significance", width), width,
                    colsep="2pt" if page else "3pt", notes=joined_notes(detail_note(detail), notes))
        for name, table in family_tables.items():  # page: 13 columns, 2 pt padding (significance)
            notes = family_collapsed_notes(table, collapsed)
            used = table_used(table)
            table, constants = compact_family_table(display_table(table), page)
            caption = f"{escape(lead)}: {escape(name.replace('_', ' '))}"
            caption += f" ({escape(', '.join(constants))})." if constants else "."
            if notes:
                caption += (rf" $^{{{COLLAPSE}}}$ a collapsed seed (below {COLLAPSE_FRACTION:g}$\times$ its cell's "
                            "median; listed beneath).")
            files[f"{name}{suffix}.tex"] = tex_head(comment, used) + float_env(
                tabulars(frame_grid(table), width, FAMILY_VALUE_COLUMNS), caption, label_for(suite.name, name, width),
                width, colsep="3pt" if page else "2pt", notes=joined_notes(detail_note(detail), notes))
    return files
