r"""Compile a generated LaTeX table with pdflatex and render it to PNG with pdftoppm, as a reviewer sees it.

The table is set in a minimal document at a two-column paper's measures (ACM sigconf: text 506 pt, column
241 pt, here at 10 pt Computer Modern, a little wider than the papers' fonts): `table*` at the text width,
`table` at the column width. The float is set in place (a minipage with its caption) on a page cut to the
table's size, and every tabular's natural width is written to the log, so the caller learns whether the
table fits its width instead of reading it off the picture.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.errors import BenchError
from bench.report.latex import PACKAGES

TOOLS = ("pdflatex", "pdftoppm")
TEXT_WIDTH_PT, COLUMN_WIDTH_PT = 506.0, 241.0
INSTALL_HINT = "Debian/Ubuntu: apt-get install texlive-latex-base texlive-latex-recommended poppler-utils"

DOCUMENT = r"""\documentclass[10pt]{article}
\usepackage{%(packages)s}
\pagestyle{empty}
\setlength{\hoffset}{-1in}\setlength{\voffset}{-1in}
\setlength{\oddsidemargin}{12pt}\setlength{\topmargin}{12pt}
\setlength{\headheight}{0pt}\setlength{\headsep}{0pt}\setlength{\footskip}{0pt}
\setlength{\textwidth}{%(width)spt}\setlength{\textheight}{200in}
\pdfpagewidth=\dimexpr\textwidth+24pt\relax
\makeatletter
%% a float set in place at its width, caption included
\renewenvironment{table}[1][]{\def\@captype{table}\noindent\begin{minipage}{%(width)spt}}{\end{minipage}}
\renewenvironment{table*}[1][]{\def\@captype{table}\noindent\begin{minipage}{%(width)spt}}{\end{minipage}}
%% each outermost tabular's natural width, to the log (nested ones: a value over its std)
\newsavebox\bench@box \newcount\bench@depth
\let\bench@tabular\tabular \let\bench@endtabular\endtabular
\renewenvironment{tabular}{\global\advance\bench@depth 1 \setbox\bench@box\hbox\bgroup\bench@tabular}%%
  {\bench@endtabular\egroup\global\advance\bench@depth -1
   \ifnum\bench@depth=0 \typeout{BENCH-TABULAR-WIDTH=\the\wd\bench@box}\fi\usebox\bench@box}
\makeatother
\begin{document}
\setbox0=\vbox{\input{table.tex}}
\pdfpageheight=\dimexpr\ht0+\dp0+24pt\relax
\noindent\box0
\end{document}
"""


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def check_tools() -> None:
    """One line naming what is missing (exit 2 through the CLI), before any table is written."""
    missing = missing_tools()
    if missing:
        raise BenchError(f"--render needs pdflatex and pdftoppm on PATH; missing: {', '.join(missing)} "
                         f"({INSTALL_HINT})")


def table_width(tex: str) -> tuple[str, float]:
    """("page", text width) for a `table*`, ("column", column width) otherwise."""
    return ("page", TEXT_WIDTH_PT) if r"\begin{table*}" in tex else ("column", COLUMN_WIDTH_PT)


def compile_table(tex_path: Path, png_path: Path | None = None, dpi: int = 200, timeout: int = 120) -> dict:
    """Compile `tex_path` in the minimal document and write its PNG (default: next to it, `.png`).
    Returns the PNG path, the width kind, the target width and each tabular's natural width (pt);
    a LaTeX error raises `BenchError` with its first error line."""
    check_tools()
    tex_path = Path(tex_path)
    text = tex_path.read_text()
    kind, width = table_width(text)
    png_path = Path(png_path) if png_path else tex_path.with_suffix(".png")
    with tempfile.TemporaryDirectory(prefix="bench-latex-") as tmp:
        folder = Path(tmp)
        (folder / "table.tex").write_text(text)
        (folder / "doc.tex").write_text(DOCUMENT % {"packages": ",".join(PACKAGES), "width": width})
        run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=folder,
                             capture_output=True, text=True, timeout=timeout)
        log = (folder / "doc.log").read_text(errors="replace") if (folder / "doc.log").exists() else run.stdout
        if run.returncode != 0 or not (folder / "doc.pdf").exists():
            error = next((line for line in log.splitlines() if line.startswith("!")), "no PDF written")
            raise BenchError(f"{tex_path}: pdflatex failed: {error}")
        subprocess.run(["pdftoppm", "-png", "-r", str(dpi), "-singlefile", "doc.pdf", "out"], cwd=folder,
                       check=True, capture_output=True, timeout=timeout)
        png_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(folder / "out.png", png_path)
    widths = [float(w) for w in re.findall(r"BENCH-TABULAR-WIDTH=([0-9.]+)pt", log)]
    return {"png": png_path, "kind": kind, "target_pt": width, "tabular_pt": widths,
            "fits": all(w <= width + 0.5 for w in widths), "overfull": "Overfull \\hbox" in log}


def describe(result: dict) -> str:
    """One line: where the PNG is and whether the table fits its width."""
    widest = max(result["tabular_pt"], default=0.0)
    room = "text" if result["kind"] == "page" else "column"
    verdict = "fits" if result["fits"] else "TOO WIDE for"
    return (f"rendered {result['png']} (tabular {widest:.0f} pt, {verdict} the {room} width "
            f"{result['target_pt']:.0f} pt)")
