"""Text views and exports of the store for ``meap-scale store``."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from meap_scale.store.store import ResultsStore, StoreError

LISTING = ("run_id", "status", "study", "objective", "mask_ratio", "model_size", "tokens_seen", "lr", "seed",
           "val_loss", "written_at")
VARIED = ("parent_run_id", "mask_sampling", "mask_with", "mask_schedule", "min_lr", "warmup_fraction", "warmup_steps",
          "weight_decay", "batch_tokens", "seq_len", "vocab_size", "data_source", "tokenizer", "precision", "workers",
          "micro_batch_size")
"""Columns ``store ls`` adds where the listed runs differ in them."""
FORMATS = ("csv", "parquet", "jsonl")


def _view_cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if hasattr(value, "strftime"):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def table_text(rows: list[dict], columns: tuple[str, ...]) -> str:
    cells = [[_view_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def listing(store: ResultsStore, filters: dict) -> str:
    rows = sorted(store.runs(filters).to_pylist(), key=lambda r: (r["study"] or "", r["run_id"]))
    varied = tuple(c for c in VARIED if len({r.get(c) for r in rows}) > 1)
    return table_text(rows, LISTING[:-1] + varied + LISTING[-1:]) + f"\n{len(rows)} run(s) in {store.url}"


def show(store: ResultsStore, run_id: str) -> str:
    rows = store.runs({"run_id": run_id}).to_pylist()
    if not rows:
        raise StoreError(f"no run {run_id!r} in {store.url}")
    row = rows[0]
    config = json.loads(row.pop("config_json") or "{}")
    width = max(map(len, row))
    text = "\n".join(f"{key:<{width}}  {_view_cell(value)}" for key, value in row.items())
    curve = store.curves(run_id)
    steps = len(set(curve["step"].to_pylist())) if curve.num_rows else 0
    return f"{text}\ncurve: {steps} report(s), metrics {sorted(set(curve['metric'].to_pylist()))}\n" \
           f"config: {json.dumps(config, indent=1)}"


def export(store: ResultsStore, table: str, fmt: str, out: str) -> int:
    data: pa.Table = store.read(table)
    if fmt == "csv":
        pacsv.write_csv(data, out)
    elif fmt == "parquet":
        pq.write_table(data, out)
    elif fmt == "jsonl":
        with open(out, "w") as handle:
            for row in data.to_pylist():
                handle.write(json.dumps(row, default=str) + "\n")
    else:
        raise StoreError(f"unknown export format {fmt!r}; formats: {', '.join(FORMATS)}")
    return data.num_rows
