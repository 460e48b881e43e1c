"""One self-contained HTML page: every table of the report and every plot, embedded.

The plots are base64 `data:` URIs and the style sheet is inline, so the single file can be mailed,
attached to an issue or opened from anywhere without its `plots/` folder. Verdict cells are
coloured so a reader finds the failures without reading every row.
"""

from __future__ import annotations

import base64
from html import escape
from typing import TYPE_CHECKING

import pandas as pd

from benchmarks.reporting.aggregate import ABOVE, BELOW, NO_PAPER, RECIPE_DIFFERS, REPRODUCED
from benchmarks.reporting.tables import Section

if TYPE_CHECKING:  # the page without figures must not need matplotlib
    from benchmarks.reporting.plots import Plot

VERDICT_CLASSES = {REPRODUCED: "ok", BELOW: "bad", ABOVE: "warn", RECIPE_DIFFERS: "warn", NO_PAPER: "none"}

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1500px; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.ok { background: #d9f2d9; } td.bad { background: #f8d0d0; }
td.warn { background: #fbeecb; } td.none { background: #eeeeee; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; }
figcaption { font-size: 0.8em; color: #555; }
img { max-width: 100%; }
"""


def html_table(table: pd.DataFrame) -> str:
    head = "".join(f"<th>{escape(str(c))}</th>" for c in table.columns)
    rows = []
    for row in table.itertuples(index=False):
        cells = []
        for column, value in zip(table.columns, row):
            css = VERDICT_CLASSES.get(value) if column == "verdict" else None
            attr = f' class="{css}"' if css else ""
            cells.append(f"<td{attr}>{escape(str(value))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>"


def html_figure(plot: Plot) -> str:
    data = base64.b64encode(plot.png).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{escape(plot.caption)}">'
            f"<figcaption>{escape(plot.caption)}</figcaption></figure>")


def render_html(sections: list[Section], plots: dict[str, Plot]) -> str:
    body = []
    for i, s in enumerate(sections):
        tag = "h1" if i == 0 else "h2"
        body.append(f"<{tag}>{escape(s.title)}</{tag}>")
        body += [f"<p>{escape(p)}</p>" for p in s.intro]
        if s.table is not None:
            body.append(html_table(s.table))
        if s.notes:
            body.append(f"<p>{escape(s.notes[0])}</p><ul>"
                        + "".join(f"<li>{escape(n)}</li>" for n in s.notes[1:]) + "</ul>")
        body += [html_figure(plots[key]) for key in s.plots if key in plots]
    title = escape(sections[0].title) if sections else "report"
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")
