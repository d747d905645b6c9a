"""An append-only results store: one folder of Parquet files per table, local or at an fsspec URL.

Every write is a new file, written under a hidden temporary name and then renamed, so a reader never
sees half a file and concurrent writers never touch the same file. Reading unions the files, keeps
one row per key (the latest ``written_at``), fills columns an older file lacks with nulls, and
reports, then skips, files it cannot read or that do not belong to the table. No pickle anywhere:
pandas, polars and DuckDB read the folders directly.
"""

from __future__ import annotations

import datetime as dt
import posixpath
import uuid
import warnings
from dataclasses import dataclass
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from meap_scale.store.schema import KEYS, SCHEMA_VERSION, SETTLED, TABLES
from meap_scale.urls import filesystem


class StoreError(ValueError):
    """The store cannot be opened or a row does not fit its table."""


@dataclass(frozen=True)
class Problem:
    path: str
    reason: str


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class ResultsStore:
    """``ResultsStore("results")``, ``ResultsStore("s3://bucket/study")``: append rows, read tables."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.fs, self.root = filesystem(url, StoreError, "storage")
        self.problems: list[Problem] = []
        if self.fs.isfile(self.root):
            raise StoreError(f"--store {url} is a file: a results store is a folder (or a URL)")

    # writing -----------------------------------------------------------------------------------
    def _rows_table(self, table: str, rows: list[dict[str, Any]]) -> pa.Table:
        schema = TABLES[table]
        unknown = sorted({key for row in rows for key in row} - set(schema.names))
        if unknown:
            raise StoreError(f"table {table!r} has no column(s) {unknown}")
        stamp = {"written_at": utc_now(), "schema_version": SCHEMA_VERSION}
        try:
            return pa.Table.from_pylist([{**row, **stamp} for row in rows], schema=schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
            raise StoreError(f"rows do not fit table {table!r}: {error}") from error

    def append(self, table: str, rows: list[dict[str, Any]]) -> str | None:
        """Write ``rows`` as one new file; returns its path (None when there is nothing to write)."""
        if table not in TABLES:
            raise StoreError(f"unknown table {table!r}; tables: {', '.join(TABLES)}")
        return self.append_table(table, self._rows_table(table, rows)) if rows else None

    def append_table(self, table: str, data: pa.Table) -> str:
        """Write an Arrow table that already has ``table``'s schema as one new file (bulk appends)."""
        if not data.schema.equals(TABLES[table]):
            raise StoreError(f"an Arrow table for {table!r} must have exactly its schema")
        folder = posixpath.join(self.root, table)
        self.fs.makedirs(folder, exist_ok=True)
        name = f"part-{utc_now():%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:12]}.parquet"
        tmp, final = posixpath.join(folder, f".tmp-{name}"), posixpath.join(folder, name)
        pq.write_table(data, tmp, filesystem=self.fs)
        self.fs.mv(tmp, final)
        return final

    def append_run(self, row: dict[str, Any]) -> None:
        self.append("runs", [row])

    def append_curve(self, run_id: str, curve: Iterable[dict[str, Any]]) -> None:
        """Store a run's reports in long format: one row per (step, metric)."""
        rows = [{"run_id": run_id, "step": point.get("step"), "tokens": point.get("tokens"), "metric": name,
                 "value": float(value)}
                for point in curve for name, value in point.items()
                if name not in ("step", "tokens") and isinstance(value, (int, float)) and value is not None]
        self.append("curves", rows)

    @property
    def is_local(self) -> bool:
        """On this machine's file system (a folder or file:// URL), not object storage."""
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        return bool({"file", "local"} & set(protocols))

    # reading -----------------------------------------------------------------------------------
    def require(self) -> "ResultsStore":
        """This store, when it holds a runs table: a mistyped path must not read as an empty store."""
        if not self.fs.exists(posixpath.join(self.root, "runs")):
            raise StoreError(f"no results store at {self.url} (it has no runs/ folder): check --store; a study "
                             f"or `meap-scale train --store` creates one")
        return self

    def _report(self, path: str, reason: str) -> None:
        problem = Problem(path, reason)
        if problem not in self.problems:
            self.problems.append(problem)
            warnings.warn(f"results store: skipping {path}: {reason}", stacklevel=3)

    def _files(self, table: str) -> list[str]:
        folder = posixpath.join(self.root, table)
        if not self.fs.exists(folder):
            return []
        files = []
        for path in sorted(self.fs.ls(folder, detail=False)):
            name = posixpath.basename(path)
            if name.startswith((".", "_")):
                continue  # a write in progress, or one killed before its rename
            if name.endswith(".parquet"):
                files.append(path)
            else:
                self._report(path, "not a Parquet file of this store")
        return files

    def _conformed(self, table: str, path: str) -> pa.Table | None:
        """The file's rows in the current schema: missing nullable columns become nulls."""
        schema = TABLES[table]
        try:
            data = pq.read_table(path, filesystem=self.fs)
        except Exception as error:  # pyarrow raises several types for damaged files
            self._report(path, f"unreadable ({type(error).__name__}: {error})")
            return None
        required = [f.name for f in schema if not f.nullable]
        missing = [name for name in required if name not in data.column_names]
        if missing:
            self._report(path, f"not a {table!r} file (missing {missing})")
            return None
        try:
            columns = [data[f.name].cast(f.type) if f.name in data.column_names else pa.nulls(len(data), f.type)
                       for f in schema]
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            self._report(path, f"columns of the wrong type ({error})")
            return None
        return pa.Table.from_arrays(columns, schema=schema)

    def read(self, table: str) -> pa.Table:
        """Every row of ``table``, one per key, the latest write winning."""
        if table not in TABLES:
            raise StoreError(f"unknown table {table!r}; tables: {', '.join(TABLES)}")
        parts = [part for path in self._files(table) if (part := self._conformed(table, path)) is not None]
        if not parts:
            return TABLES[table].empty_table()
        return latest_per_key(pa.concat_tables(parts), KEYS[table], SETTLED.get(table))

    def runs(self, filters: dict[str, Any] | None = None) -> pa.Table:
        """Rows of the runs table; a ``study`` filter selects every run the study asked for, including runs
        another study trained first (the ``memberships`` table), not only the runs it trained."""
        filters = dict(filters or {})
        study = filters.pop("study", None)
        data = apply_filters(self.read("runs"), filters)
        if study is None:
            return data
        members = apply_filters(self.read("memberships"), {"study": study})["run_id"]
        return data.filter(pc.or_(equality_mask(data, "study", study), pc.is_in(data["run_id"], value_set=members)))

    def add_members(self, study: str, run_ids: list[str], trial_id: str | None = None) -> None:
        """Record that ``study`` asked for these runs (trained now or found stored)."""
        self.append("memberships", [{"run_id": run_id, "study": study, "trial_id": trial_id} for run_id in run_ids])

    def curves(self, run_id: str | None = None) -> pa.Table:
        return apply_filters(self.read("curves"), {"run_id": run_id} if run_id else {})

    def to_pandas(self, table: str = "runs", filters: dict[str, Any] | None = None):
        return apply_filters(self.read(table), filters or {}).to_pandas()

    def has_run(self, run_id: str, status: str = "finished") -> bool:
        """True when ``run_id`` is stored with ``status``: finished runs are never trained again."""
        return self.runs({"run_id": run_id, "status": status}).num_rows > 0


def latest_per_key(data: pa.Table, keys: tuple[str, ...], settled: tuple[str, Any] | None = None) -> pa.Table:
    """Keep the most recently written row of each key (rows with equal keys are one record); with
    ``settled`` (column, value), a row holding that value wins over every row without it."""
    import pandas as pd

    frame = data.select([*keys, "written_at"]).to_pandas(types_mapper=pd.ArrowDtype)
    frame["_row"] = range(len(frame))
    order = ["written_at", "_row"]
    if settled is not None:
        frame["_settled"] = equality_mask(data, *settled).to_numpy(zero_copy_only=False)
        order.insert(0, "_settled")
    keep = frame.sort_values(order, kind="stable").drop_duplicates(list(keys), keep="last")
    return data.take(pa.array(sorted(keep["_row"])))


def equality_mask(data: pa.Table, column: str, wanted: Any) -> pa.ChunkedArray:
    """Rows whose ``column`` equals ``wanted`` (a list, tuple or set means 'any of these'); nulls never match."""
    if column not in data.column_names:
        raise StoreError(f"cannot filter on {column!r}; columns: {', '.join(data.column_names)}")
    if isinstance(wanted, (list, tuple, set)):
        mask = pc.is_in(data[column], value_set=pa.array(list(wanted), type=data.schema.field(column).type))
    else:
        mask = pc.equal(data[column], pa.scalar(wanted, type=data.schema.field(column).type))
    return pc.fill_null(mask, False)


def apply_filters(data: pa.Table, filters: dict[str, Any]) -> pa.Table:
    """Equality filters (see ``equality_mask``), all of them."""
    for column, wanted in filters.items():
        data = data.filter(equality_mask(data, column, wanted))
    return data
