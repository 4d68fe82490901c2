"""One page per run record (`runs/<run_id>.html`): its cell and flags, per-segment metrics, training curves
(inline SVG, with the points in a table), the spec's settings per layer, provenance, costs and everything
else the record holds, and the record itself embedded as JSON.
"""

from __future__ import annotations

from typing import Any

from bench.view.html import data_table, esc, fmt, json_script, page, plain_table, svg_curve

LAYERS = ("dataset", "split", "backbone", "method", "encoder")
X_KEYS = ("epoch", "step")
LIST_LIMIT = 24  # list values shown in the key / value tables; the embedded JSON keeps them whole


def flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, leaf) pairs of nested dicts, keys sorted; lists longer than LIST_LIMIT are shortened."""
    if isinstance(value, dict):
        out = []
        for key in sorted(value, key=str):
            out += flatten(value[key], f"{prefix}.{key}" if prefix else str(key))
        return out or [(prefix, "{}")]
    if isinstance(value, list):
        if all(not isinstance(v, (dict, list)) for v in value):
            shown = ", ".join(fmt(v) for v in value[:LIST_LIMIT])
            more = f", … ({len(value)} in all)" if len(value) > LIST_LIMIT else ""
            return [(prefix, f"[{shown}{more}]")]
        out = []
        for i, item in enumerate(value[:LIST_LIMIT]):
            out += flatten(item, f"{prefix}[{i}]")
        if len(value) > LIST_LIMIT:
            out.append((f"{prefix}[…]", f"{len(value)} items in all (the full list is in the record JSON)"))
        return out
    return [(prefix, value)]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def curves(record: dict) -> list[tuple[str, str, list[float], list[float]]]:
    """The training curves a record holds, as (name, x name, xs, ys): a list of at least two numbers with a
    fraction among them (per-step losses) under `fit` or `method_info`, or a list of at least two points
    with an `epoch` / `step` key (one curve per other numeric key). Identical curves are kept once."""
    found: list[tuple[str, str, list[float], list[float]]] = []
    seen: set[tuple] = set()

    def add(name: str, x_name: str, xs: list[float], ys: list[float]) -> None:
        key = (x_name, tuple(xs), tuple(ys))
        if key not in seen:
            seen.add(key)
            found.append((name, x_name, xs, ys))

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for key in sorted(value, key=str):
                walk(value[key], f"{path}.{key}")
        elif isinstance(value, list) and len(value) >= 2:
            if all(_number(v) for v in value) and any(isinstance(v, float) and not v.is_integer() for v in value):
                add(path, "step", [float(i) for i in range(len(value))], [float(v) for v in value])
            elif all(isinstance(v, dict) for v in value):
                x_name = next((k for k in X_KEYS if all(_number(p.get(k)) for p in value)), None)
                if x_name is None:
                    return
                keys = sorted({k for p in value for k, v in p.items() if k != x_name and _number(v)})
                for key in keys:
                    points = [(float(p[x_name]), float(p[key])) for p in value if _number(p.get(key))]
                    add(f"{path} {key}", x_name, [x for x, _ in points], [y for _, y in points])

    walk(record.get("fit", {}), "fit")
    walk(record.get("method_info", {}), "method_info")
    return found


def _curves_html(record: dict) -> str:
    found = curves(record)
    if not found:
        return ('<p class="note">This record holds no training curve: no per-epoch or per-step series under fit '
                "or method_info (RecBole backbones keep their best epoch and its validation metrics, listed "
                "below).</p>")
    charts = "".join(svg_curve(name, xs, ys, x_name) for name, x_name, xs, ys in found)
    tables = "".join(f"<details><summary>{esc(name)}: {len(xs)} points</summary>"
                     + plain_table([x_name, "value"], [[x, y] for x, y in zip(xs, ys)]) + "</details>"
                     for name, x_name, xs, ys in found)
    return charts + tables


def _metrics_html(record: dict, run_id: str) -> str:
    metrics = record.get("metrics", {})
    names = sorted({k for values in metrics.values() for k in values if k != "n_users"})
    rows = [[segment, fmt(values.get("n_users"))] + [fmt(values.get(name)) for name in names]
            for segment, values in sorted(metrics.items(), key=lambda kv: (kv[0] != "overall", kv[0]))]
    return data_table(f"metrics-{run_id}", ["segment", "n_users"] + names, rows)


def _spec_html(spec: dict) -> str:
    rows = []
    for layer in LAYERS:
        rows.append([layer, "(name)", spec.get(layer)])
        for key, value in flatten(spec.get(f"{layer}_settings") or {}):
            rows.append([layer, key, value])
    rows.append(["seed", "", spec.get("seed")])
    return plain_table(["layer", "setting", "value"], rows)


def run_page(record: dict, flags: dict[str, Any], cell: list[tuple[str, str]], suites: list[tuple[str, str]]) -> str:
    """The HTML page of one run: `flags` (label, protocol, converged / capped / collapsed ...), `cell` (seed
    label, href of each run of the same table cell, this run included) and `suites` (name, href)."""
    run_id = record["run_id"]
    spec = record.get("spec", {})
    label = "/".join(str(spec.get(k)) for k in ("dataset", "split", "backbone", "method")) + f"/seed{spec.get('seed')}"
    summary = plain_table(["field", "value"], [[k, v] for k, v in flags.items()])
    siblings = " ".join(f'<a href="{esc(href)}">{esc(name)}</a>' for name, href in cell)
    in_suites = ", ".join(f'<a href="{esc(href)}">{esc(name)}</a>' for name, href in suites)
    costs = {key: record[key] for key in ("params", "latency", "timings", "evaluation") if key in record}
    other = {k: v for k, v in record.items()
             if k not in {"run_id", "spec", "metrics", "provenance", "method_info", "fit", "seal", *costs}}
    sections = [
        f'<h1 id="run">Run <code id="run-id">{esc(run_id)}</code></h1>',
        f"<p>{esc(label)} · suites: {in_suites or '—'} · seeds of this cell: {siblings or '—'}</p>",
        summary,
        '<h2 id="metrics">Metrics per segment</h2>', _metrics_html(record, run_id),
        '<h2 id="curves">Training curves</h2>', _curves_html(record),
        '<h2 id="spec">Spec (as resolved)</h2>', _spec_html(spec),
        '<h2 id="provenance">Provenance</h2>',
        plain_table(["key", "value"], [list(p) for p in flatten(record.get("provenance", {}))]),
        '<h2 id="costs">Parameters, latency, timings, evaluation</h2>',
        plain_table(["key", "value"], [list(p) for p in flatten(costs)]),
        '<h2 id="method-info">Method facts (method_info) and fit</h2>',
        plain_table(["key", "value"], [list(p) for p in flatten({"method_info": record.get("method_info", {}),
                                                                  "fit": record.get("fit", {})})]),
        '<h2 id="other">Identity, request, status, seal</h2>',
        plain_table(["key", "value"], [list(p) for p in flatten({**other, "seal": record.get("seal", {})})]),
        '<h2 id="record">Record (JSON)</h2>',
        '<details><summary>the whole record.json, as embedded in this page</summary>'
        '<pre id="record-pretty"></pre></details>',
        json_script("record-json", record),
    ]
    return page(f"Run {run_id}", "\n".join(sections), root="../")
