"""The report page: one self-contained HTML file, scripts, styles and data inline, no network request.

Every string from the store reaches the page either through ``html.escape`` (sections, tables) or as
JSON in a ``<script type="application/json">`` block whose ``<``, ``>`` and ``&`` are escaped as
``\\u003c``-style sequences, read with ``JSON.parse`` and written into the DOM as text (the runs table)
or drawn as SVG text by Vega: a run named ``<script>alert(1)</script>`` shows as those characters.
"""

from __future__ import annotations

import functools
import html
import math

from meap_scale import strict_json
from meap_scale.report.sections import Missing, Section, Table

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1180px;padding:0 24px;
color:#222}
h1{margin:24px 0 4px}h2{margin-top:36px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#666}.banner{background:#fff4d6;border:1px solid #e8c66a;padding:10px 14px;margin:14px 0;border-radius:4px}
.explain{color:#444;max-width:920px}.note{color:#7a4b00}.missing{color:#777}
.figures{display:flex;flex-wrap:wrap;gap:18px}.figure{min-height:60px}
table{border-collapse:collapse;margin:10px 0;font-size:12.5px}td,th{border:1px solid #ddd;padding:3px 7px;
text-align:left;vertical-align:top;max-width:420px;overflow-wrap:anywhere}th{background:#f4f4f4}
#runs td{white-space:nowrap;overflow-wrap:normal}td.num{white-space:nowrap;text-align:right}
#runs th{cursor:pointer;user-select:none}#runs th[data-order]::after{content:attr(data-order)}
#runs-filter{margin:6px 0;padding:4px 8px;width:320px}.runs-wrap{max-height:560px;overflow:auto}
nav a{margin-right:12px}
"""

SCRIPT = """
(function () {
  const data = JSON.parse(document.getElementById('report-data').textContent);
  const options = {renderer: 'svg', actions: {export: true, source: false, compiled: false, editor: false}};
  for (const [name, table] of Object.entries(data.tables)) {  // figure data sent as columns + rows, to save size
    data.figures[name].data = {values: table.rows.map(function (row) {
      const record = {};
      table.columns.forEach(function (column, i) { record[column] = row[i]; });
      return record;
    })};
  }
  for (const [name, spec] of Object.entries(data.figures)) {
    vegaEmbed('#fig-' + name, spec, options).catch(function (error) { console.error('figure ' + name, error); });
  }
  const table = document.getElementById('runs');
  if (!table) return;
  let rows = data.runs.slice();
  const body = table.querySelector('tbody');
  const filter = document.getElementById('runs-filter');
  const PREFIXES = [[1e18, 'E'], [1e15, 'P'], [1e12, 'T'], [1e9, 'G'], [1e6, 'M'], [1e3, 'k']];
  const show = function (value) {  // SI prefixes from 10,000 up, four significant digits below; exact in the tooltip
    if (value === null || value === undefined) return '';
    if (typeof value !== 'number') return String(value);
    if (Math.abs(value) >= 1e4) {
      const [scale, prefix] = PREFIXES.find(function (p) { return Math.abs(value) >= p[0]; });
      return Number((value / scale).toPrecision(3)).toString() + prefix;
    }
    return Number.isInteger(value) ? String(value) : Number(value.toPrecision(4)).toString();
  };
  function render() {
    const needle = filter.value.toLowerCase();
    body.replaceChildren();
    for (const row of rows) {
      const cells = row.map(show);
      if (needle && !cells.join(' ').toLowerCase().includes(needle)) continue;
      const tr = document.createElement('tr');
      row.forEach(function (value, i) {
        const td = document.createElement('td');
        td.textContent = cells[i];
        if (typeof value === 'number') { td.className = 'num'; td.title = String(value); }
        tr.appendChild(td);
      });
      body.appendChild(tr);
    }
    document.getElementById('runs-count').textContent = body.children.length + ' of ' + rows.length + ' runs';
  }
  table.querySelectorAll('th').forEach(function (th, index) {
    th.addEventListener('click', function () {
      const column = index;
      const ascending = th.getAttribute('data-order') !== ' \\u25b2';
      table.querySelectorAll('th').forEach(function (other) { other.removeAttribute('data-order'); });
      th.setAttribute('data-order', ascending ? ' \\u25b2' : ' \\u25bc');
      rows.sort(function (a, b) {
        const x = a[column], y = b[column];
        if (x === y) return 0;
        if (x === null || x === undefined) return 1;
        if (y === null || y === undefined) return -1;
        const order = (typeof x === 'number' && typeof y === 'number') ? x - y : String(x).localeCompare(String(y));
        return ascending ? order : -order;
      });
      render();
    });
  });
  filter.addEventListener('input', render);
  render();
})();
"""


@functools.cache
def vega_bundle() -> str:
    """Vega, Vega-Lite and Vega-Embed in one script (from vl-convert, which carries them offline)."""
    import vl_convert

    return vl_convert.javascript_bundle().replace("</script", "<\\/script")


def _round(value, digits: int = 5):
    return float(f"{value:.{digits}g}") if isinstance(value, float) and math.isfinite(value) else value


def compact(figures: dict[str, dict]) -> tuple[dict[str, dict], dict[str, dict]]:
    """Figures without their top-level rows, and those rows as {columns, rows} with numbers to five
    significant digits: half the bytes of repeated keys, for figures with thousands of points."""
    specs, tables = {}, {}
    for name, spec in figures.items():
        values = spec.get("data", {}).get("values")
        if not values:
            specs[name] = spec
            continue
        columns = sorted({key for row in values for key in row})
        tables[name] = {"columns": columns, "rows": [[_round(row.get(c)) for c in columns] for row in values]}
        specs[name] = {**spec, "data": {"values": []}}
    return specs, tables


def script_json(value) -> str:
    """JSON safe inside a <script> element: no sequence in it can close the element or open a comment."""
    text = strict_json.dumps(value, infinity_as_text=False, default=str, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell_text(v))}</td>" for v in row) + "</tr>" for row in table.rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _section(section: Section) -> str:
    parts = [f'<section id="{section.key}"><h2>{html.escape(section.title)}</h2>',
             f'<p class="explain">{html.escape(section.explanation)}</p>']
    parts += [f'<p class="note">{html.escape(note)}</p>' for note in section.notes]
    if section.figures:
        parts.append('<div class="figures">' + "".join(
            f'<div class="figure" id="fig-{figure.name}" data-title="{html.escape(figure.title)}"></div>'
            for figure in section.figures) + "</div>")
    parts += [_table(table) for table in section.tables]
    if section.run_columns:
        parts.append('<input id="runs-filter" type="search" placeholder="filter runs (any column)"> '
                     '<span id="runs-count" class="meta"></span><div class="runs-wrap"><table id="runs"><thead><tr>'
                     + "".join(f"<th>{html.escape(c)}</th>" for c in section.run_columns)
                     + "</tr></thead><tbody></tbody></table></div>")
    return "".join(parts) + "</section>"


def render_page(title: str, subtitle: str, banners: list[str], sections: list[Section], missing: list[Missing],
           figures: dict[str, dict], runs: list[list]) -> str:
    nav = "".join(f'<a href="#{s.key}">{html.escape(s.title)}</a>' for s in sections)
    absent = ""
    if missing:
        absent = ('<section id="missing"><h2>Not shown</h2><ul>' + "".join(
            f'<li class="missing">{html.escape(m.title)}: needs {html.escape(m.needs)}</li>' for m in missing)
                  + "</ul></section>")
    specs, tables = compact(figures)
    payload = script_json({"figures": specs, "tables": tables, "runs": runs})
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p class=\"meta\">{html.escape(subtitle)}</p>"
            + "".join(f'<p class="banner">{html.escape(b)}</p>' for b in banners)
            + f"<nav>{nav}</nav>" + "".join(_section(s) for s in sections) + absent
            + f'<script type="application/json" id="report-data">{payload}</script>'
            + f"<script>{vega_bundle()}</script><script>{SCRIPT}</script></body></html>")
