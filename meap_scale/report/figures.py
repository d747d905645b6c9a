"""Vega-Lite specifications for the report's figures: plain dicts, data inline, one builder per shape.

Vega-Lite rather than a plotting library with a server: a spec is data, so the same dict renders in the
page (the inlined Vega bundle) and to SVG/PNG for papers (``vl-convert``), offline in both cases.
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"
"""Identifies the spec's version; never fetched (the bundle is inlined)."""
WIDTH, HEIGHT = 440, 260
OBJECTIVE_COLOURS = {"domain": ["ntp", "meap", "meap_sft"], "range": ["#4c78a8", "#e45756", "#f58518"]}


@dataclass(frozen=True)
class Figure:
    name: str
    """File-safe identifier: the element id on the page and the file name under --figures."""
    title: str
    spec: dict


def axis(field: str, title: str, *, log: bool = False, kind: str = "quantitative", **extra) -> dict:
    scale = {"type": "log"} if log else {"zero": False}
    return {"field": field, "type": kind, "title": title, **({"scale": scale} if kind == "quantitative" else {}),
            **extra}


def objective_colour(values: list[dict], field: str = "objective") -> dict:
    """Each objective's fixed colour; the legend lists only the objectives ``values`` hold."""
    present = {v.get(field) for v in values}
    pairs = [(o, c) for o, c in zip(OBJECTIVE_COLOURS["domain"], OBJECTIVE_COLOURS["range"]) if o in present]
    return {"field": field, "type": "nominal", "title": "objective",
            "scale": {"domain": [o for o, _ in pairs], "range": [c for _, c in pairs]}}


def chart(title: str, values: list[dict], layers: list[dict], **extra) -> dict:
    """A layered chart over ``values``; each layer is a {mark, encoding, ...} dict."""
    return {"$schema": SCHEMA, "title": title, "width": WIDTH, "height": HEIGHT, "data": {"values": values},
            "layer": layers, **extra}


def rule_at(value: float, channel: str, label: str, colour: str = "#888") -> dict:
    """A dashed reference line (chance level, multiplier 1) with its label written beside it."""
    ref = {channel: {"field": "ref", "type": "quantitative"}}
    other = {"x": {"value": 2}} if channel == "y" else {"y": {"value": 2}}
    return {"data": {"values": [{"ref": value, "label": label}]}, "layer": [
        {"mark": {"type": "rule", "strokeDash": [4, 4], "color": colour},
         "encoding": {**ref, "tooltip": [{"field": "label", "type": "nominal"}]}},
        {"mark": {"type": "text", "align": "left", "baseline": "bottom", "dx": 2, "dy": -2, "fontSize": 10,
                  "color": colour},
         "encoding": {**ref, **other, "text": {"field": "label", "type": "nominal"}}}]}


def band(x: dict, low: str, high: str, colour: dict) -> dict:
    return {"mark": {"type": "area", "opacity": 0.2}, "encoding": {"x": x, "y": {"field": low, "type": "quantitative"},
                                                                  "y2": {"field": high}, "color": colour}}


def heatmap(title: str, values: list[dict], x: dict, y: dict, colour: dict, facet: dict | None = None) -> dict:
    spec = {"$schema": SCHEMA, "title": title, "data": {"values": values}}
    inner = {"width": 220, "height": 180, "layer": [
        {"mark": "rect", "encoding": {"x": x, "y": y, "color": colour,
                                      "tooltip": [x, y, {**colour, "format": ".3f"}]}},
        {"mark": {"type": "text", "fontSize": 10},
         "encoding": {"x": x, "y": y, "text": {"field": colour["field"], "type": "quantitative", "format": ".2f"}}}]}
    if facet:
        return {**spec, "facet": facet, "columns": 3, "spec": inner, "resolve": {"scale": {"color": "shared"}}}
    return {**spec, **inner}
