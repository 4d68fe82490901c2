"""HTML building blocks of the results site: the page shell (inline CSS and JS, no network), escaped
tables that sort and filter in the browser, data embedded as JSON, a Markdown subset for the generated
`.md` notes, and inline SVG line charts. Everything is a pure function of its input: no timestamps.
"""

from __future__ import annotations

import json
import math
import re
from html import escape
from typing import Any

RUN_ID = re.compile(r"\b[0-9a-f]{16}\b")
# a cell that reads as a number (right-aligned): 0.0586 ± 0.0096, +13.3% [−2.5, +35.9], 249,344, 0.0179 ‡
NUMBER = re.compile(r"^[+\-−]?(\d[\d,]*\.?\d*|\.\d+)(e[+-]?\d+)?%?( ± [\d.]+)?( \[.*\])?( [‡◊*↑↓])*$")

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d232a;background:#fafbfc}
header{background:#22313f;color:#fff;padding:10px 24px}header a{color:#cfe3ff;margin-right:16px}
header b{margin-right:24px}main{padding:8px 24px 40px;max-width:1600px}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #d8dee4}h3{font-size:15px}
table{border-collapse:collapse;margin:6px 0 4px;background:#fff;font-size:13px}
th,td{border:1px solid #d8dee4;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#eef2f6;position:sticky;top:0}table.data th{cursor:pointer;user-select:none}
th.asc::after{content:" \\25B2"}th.desc::after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.tools{margin-top:10px}.tools input{padding:3px 6px;width:260px}.count{color:#57606a;margin-left:8px}
.seeds{font-size:10px;margin-left:3px}.seeds a{margin-left:2px}table.results td{white-space:nowrap}.note{color:#57606a}
.flag{color:#b35900;font-weight:600}.fig{display:inline-block;margin:6px 12px 12px 0;vertical-align:top}
.fig img{max-width:640px;border:1px solid #d8dee4;background:#fff}.fig div{color:#57606a;font-size:12px}
pre{background:#fff;border:1px solid #d8dee4;padding:8px;overflow:auto;max-height:480px}
.curve{display:inline-block;margin:0 16px 12px 0;vertical-align:top}.wrap{overflow-x:auto}
code{background:#eef2f6;padding:0 3px;border-radius:3px}
"""

JS = r"""
function cellKey(td){
  if(td.dataset.sort!==undefined){var v=parseFloat(td.dataset.sort);return isNaN(v)?td.dataset.sort:v;}
  var t=td.textContent.trim().replace(/,/g,'').replace(/\u2212/g,'-');
  var m=t.match(/^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?/i);return m?parseFloat(m[0]):t.toLowerCase();
}
function sortBy(th){
  var table=th.closest('table'),body=table.tBodies[0],i=th.cellIndex,asc=!th.classList.contains('asc');
  table.querySelectorAll('th').forEach(function(h){h.classList.remove('asc','desc');});
  th.classList.add(asc?'asc':'desc');
  var rows=Array.prototype.slice.call(body.rows);
  rows.sort(function(a,b){
    var x=cellKey(a.cells[i]),y=cellKey(b.cells[i]);
    if(typeof x!==typeof y){x=String(x);y=String(y);}
    return (x<y?-1:x>y?1:0)*(asc?1:-1);
  });
  rows.forEach(function(r){body.appendChild(r);});
}
function applyFilter(input){
  var table=document.getElementById(input.dataset.table),terms=input.value.toLowerCase().split(/\s+/).filter(Boolean);
  var shown=0,rows=table.tBodies[0].rows;
  for(var r=0;r<rows.length;r++){
    var text=rows[r].textContent.toLowerCase(),ok=terms.every(function(t){return text.indexOf(t)>=0;});
    rows[r].style.display=ok?'':'none';if(ok)shown++;
  }
  document.getElementById(input.dataset.table+'-count').textContent=shown+' of '+rows.length+' rows';
}
function downloadFrame(id,name){
  var data=JSON.parse(document.getElementById(id).textContent);
  var q=function(v){v=v===null?'':String(v);return /[",\n]/.test(v)?'"'+v.replace(/"/g,'""')+'"':v;};
  var lines=[data.columns.map(q).join(',')].concat(data.data.map(function(r){return r.map(q).join(',');}));
  var a=document.createElement('a');a.href=URL.createObjectURL(new Blob([lines.join('\n')+'\n'],{type:'text/csv'}));
  a.download=name;document.body.appendChild(a);a.click();a.remove();
}
document.addEventListener('DOMContentLoaded',function(){
  document.querySelectorAll('table.data th').forEach(function(th){
    th.addEventListener('click',function(){sortBy(th);});
  });
  document.querySelectorAll('input.filter').forEach(function(input){
    input.addEventListener('input',function(){applyFilter(input);});applyFilter(input);
  });
  var raw=document.getElementById('record-json'),out=document.getElementById('record-pretty');
  if(raw&&out){out.textContent=JSON.stringify(JSON.parse(raw.textContent),null,2);}
});
"""


def esc(value: Any) -> str:
    """Text for HTML (None -> empty), quotes escaped too: safe in element bodies and attribute values."""
    return "" if value is None else escape(str(value), quote=True)


def fmt(value: Any) -> str:
    """A value for a table cell: floats to 6 significant digits, NaN / None as an em dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def page(title: str, body: str, root: str = "") -> str:
    """A complete HTML page: `root` is the relative path back to the site's top folder ("" or "../")."""
    nav = (f'<header><b>llmrec-bench results</b><a href="{root}index.html">Suites</a>'
           f'<a href="{root}claims.html">Claims</a><a href="{root}index.html#figures">Figures</a></header>')
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{esc(title)}</title>\n<link rel=\"icon\" href=\"data:,\">\n<style>{CSS}</style>\n"
            f"<script>{JS}</script>\n</head>\n<body>\n{nav}\n<main>\n{body}\n</main>\n</body>\n</html>\n")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def json_script(element_id: str, data: Any) -> str:
    """`data` embedded as JSON in a <script type="application/json"> element (NaN / inf as null, which JSON
    lacks; `<`, `>`, `&` escaped so no text can close the element)."""
    text = json.dumps(_finite(data), sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False,
                      default=str)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f'<script type="application/json" id="{esc(element_id)}">{text}</script>'


def linkify(text: str, run_links: dict[str, str]) -> str:
    """Escaped `text` with every known run id made a link to its record page (`run_links`: id -> href)."""
    out, last = [], 0
    for match in RUN_ID.finditer(text):
        if match.group(0) in run_links:
            out += [esc(text[last:match.start()]),
                    f'<a href="{esc(run_links[match.group(0)])}">{match.group(0)}</a>']
            last = match.end()
    return "".join(out) + esc(text[last:])


def is_number(text: str) -> bool:
    """Whether a table cell reads as a number (right-aligned): `0.0586 ± 0.0096`, `+13.3%`, `249,344`."""
    return bool(NUMBER.match(text))


def data_table(table_id: str, header: list[str], rows: list[list[str]], raw: bool = False,
               row_ids: list[str] | None = None, sort_keys: list[list[Any]] | None = None,
               css_class: str = "data") -> str:
    """A sortable (click a header) and filterable (the text box above it) table. Cells are escaped text, or
    HTML already escaped by the caller when `raw`; `row_ids` give rows anchors, `sort_keys` numeric keys."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for r, row in enumerate(rows):
        cells = []
        for c, cell in enumerate(row):
            key = sort_keys[r][c] if sort_keys else None
            attrs = f' data-sort="{esc(fmt(key))}"' if key is not None else ""
            plain = re.sub(r"<[^>]+>", "", re.sub(r'<sup class="seeds">.*?</sup>', "", cell)) if raw else cell
            cls = ' class="num"' if is_number(plain.strip()) else ""
            cells.append(f"<td{cls}{attrs}>{cell if raw else esc(cell)}</td>")
        rid = f' id="{esc(row_ids[r])}"' if row_ids and row_ids[r] else ""
        body.append(f"<tr{rid}>{''.join(cells)}</tr>")
    return (f'<div class="tools"><input type="search" class="filter" data-table="{esc(table_id)}" '
            f'placeholder="Filter rows (all words must match)" aria-label="filter {esc(table_id)}">'
            f'<span class="count" id="{esc(table_id)}-count">{len(rows)} of {len(rows)} rows</span></div>\n'
            f'<div class="wrap"><table class="{esc(css_class)}" id="{esc(table_id)}"><thead><tr>{head}</tr></thead>\n'
            f"<tbody>\n" + "\n".join(body) + "\n</tbody></table></div>")


def plain_table(header: list[str], rows: list[list[Any]]) -> str:
    """A small static table of escaped, formatted values."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    def cell(value: Any) -> str:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return f"<td{' class=num' if number else ''}>{esc(fmt(value))}</td>"

    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>\n" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table>"


def _inline(text: str, run_links: dict[str, str]) -> str:
    """Markdown inline subset: `code` and **bold**, run ids linked; everything else escaped."""
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) >= 2:
            out.append(f"<code>{linkify(part[1:-1], run_links)}</code>")
        else:
            out.append(re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", linkify(part, run_links)))
    return "".join(out)


def _md_cells(line: str) -> list[str]:
    cells = re.split(r"(?<!\\)\|", line.strip().strip("|") if line.strip() != "|" else "")
    return [c.strip().replace("\\|", "|") for c in cells]


def markdown(text: str, id_prefix: str, run_links: dict[str, str], tables: bool = True) -> str:
    """The Markdown the harness writes (headings, pipe tables, `-` lists, paragraphs) as HTML; pipe tables
    become sortable, filterable tables (or are left out when not `tables`)."""
    lines, out, i, n_table = text.splitlines(), [], 0, 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("|"):
            block = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                block.append(lines[i])
                i += 1
            if tables and len(block) >= 2:
                rows = [_md_cells(b) for b in block[2:]]
                rows = [[_inline(c, run_links) for c in r] for r in rows]
                out.append(data_table(f"{id_prefix}-md{n_table}", _md_cells(block[0]), rows, raw=True))
                n_table += 1
            continue
        if line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")) + 2, 4)
            out.append(f"<h{level}>{_inline(line.lstrip('#').strip(), run_links)}</h{level}>")
        elif line.lstrip().startswith("- "):
            items = []
            while i < len(lines) and lines[i].lstrip().startswith("- "):
                depth = (len(lines[i]) - len(lines[i].lstrip())) // 2
                items.append(f'<li style="margin-left:{depth * 18}px">{_inline(lines[i].lstrip()[2:], run_links)}</li>')
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
            continue
        elif line.strip() and not line.startswith("```"):
            out.append(f'<p class="note">{_inline(line, run_links)}</p>')
        i += 1
    return "\n".join(out)


def svg_curve(title: str, xs: list[float], ys: list[float], x_name: str) -> str:
    """A small inline SVG line chart of one training curve, axes labelled with its ranges."""
    width, height, left, bottom = 340, 150, 52, 22
    finite = [(x, y) for x, y in zip(xs, ys) if math.isfinite(x) and math.isfinite(y)]
    if len(finite) < 2:
        return ""
    x0, x1 = min(x for x, _ in finite), max(x for x, _ in finite)
    y0, y1 = min(y for _, y in finite), max(y for _, y in finite)
    sx = (width - left - 8) / ((x1 - x0) or 1)
    sy = (height - bottom - 8) / ((y1 - y0) or 1)
    points = " ".join(f"{left + (x - x0) * sx:.1f},{height - bottom - (y - y0) * sy:.1f}" for x, y in finite)
    return (f'<div class="curve"><div>{esc(title)}</div><svg width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(title)}">'
            f'<rect x="{left}" y="8" width="{width - left - 8}" height="{height - bottom - 8}" fill="#fff" '
            f'stroke="#d8dee4"/><polyline fill="none" stroke="#0969da" stroke-width="1.5" points="{points}"/>'
            f'<text x="{left - 4}" y="14" font-size="10" text-anchor="end">{esc(fmt(y1))}</text>'
            f'<text x="{left - 4}" y="{height - bottom}" font-size="10" text-anchor="end">{esc(fmt(y0))}</text>'
            f'<text x="{left}" y="{height - 6}" font-size="10">{esc(fmt(x0))}</text>'
            f'<text x="{width - 8}" y="{height - 6}" font-size="10" text-anchor="end">{esc(x_name)} '
            f'{esc(fmt(x1))}</text></svg></div>')
