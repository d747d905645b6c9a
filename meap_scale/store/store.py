"""An append-only results store: one folder of Parquet files per table, local or at an fsspec URL.

Every write is a new file, written under a hidden temporary name and then renamed, so a reader never
sees half a file and concurrent writers never touch the same file. Reading unions the files, keeps
one row per key (the latest stored: ``stored_at``, the storage's clock, then the writer's ``written_at``),
fills columns an older file lacks with nulls, and reports, then skips, files it cannot read or that do not
belong to the table. No pickle anywhere: pandas, polars and DuckDB read the folders directly.

A study writes a few files per run, so a store of R runs holds thousands of files, and every trial reads
it: read naively, that is O(R^2) object-store requests over a study. Two things keep it near O(files
touched): a ``ResultsStore`` reads each file once (files never change once renamed; a read lists the folder
and opens only files it has not seen), and ``compact`` merges a table's files into one once it has
``COMPACT_AT`` of them (the study driver calls it after every trial), keeping every row with the storage time
of the file it came from. Compaction writes the merged file before it deletes the merged ones, so a reader that
listed a file which is then gone lists again and finds its rows in the merged file. It also removes the temp
files of writers killed more than ``STALE_TEMP_S`` ago.
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

from meap_scale.store.schema import KEYS, SCHEMA_VERSION, SETTLED, TABLES, TIMESTAMP
from meap_scale.urls import filesystem

COMPACT_AT = 16
"""Files in one table folder at which ``compact`` merges them into one."""
STALE_TEMP_S = 3600.0
"""A temp file older than this is a killed writer's: a live one renames its file within seconds."""
LIST_ATTEMPTS = 5
"""Listings a read tries when files it listed are gone (merged by a compaction meanwhile)."""
_GONE = object()


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
        self._parts: dict[str, pa.Table] = {}
        """Rows of each file this object has read, by path: files never change once renamed."""
        self._merged: dict[str, tuple[tuple, pa.Table]] = {}
        """Per table, the listing last read and its rows, one per key."""
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

    def append_table(self, table: str, data: pa.Table, prefix: str = "part") -> str:
        """Write an Arrow table that already has ``table``'s schema as one new file (bulk appends)."""
        if not data.schema.equals(TABLES[table]):
            raise StoreError(f"an Arrow table for {table!r} must have exactly its schema")
        folder = posixpath.join(self.root, table)
        self.fs.makedirs(folder, exist_ok=True)
        name = f"{prefix}-{utc_now():%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:12]}.parquet"
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

    def _entries(self, table: str) -> list[dict]:
        """The fsspec listing of the table's folder, in name order (empty where there is no folder yet)."""
        folder = posixpath.join(self.root, table)
        if not self.fs.exists(folder):
            return []
        return sorted(self.fs.ls(folder, detail=True), key=lambda entry: entry["name"])

    def _listing(self, table: str, entries: list[dict] | None = None) -> tuple[tuple[str, dt.datetime | None], ...]:
        """The table's Parquet files in name order (from ``entries`` where the caller listed them already), each
        with its storage time; temp files and files that are not Parquet are passed over (the latter reported)."""
        files = []
        for info in self._entries(table) if entries is None else entries:
            path = info["name"]
            name = posixpath.basename(path)
            if name.startswith((".", "_")):
                continue  # a write in progress, or one killed before its rename
            if name.endswith(".parquet"):
                files.append((path, storage_time(info)))
            else:
                self._report(path, "not a Parquet file of this store")
        return tuple(files)

    def _conformed(self, table: str, path: str, stored_at: dt.datetime | None):
        """The file's rows in the current schema (missing nullable columns become nulls, ``stored_at`` the file's
        storage time where it has none); None for a file that is not readable; ``_GONE`` for one that vanished."""
        schema = TABLES[table]
        try:
            with self.fs.open(path, "rb") as handle:  # a third of read_table's time on a file of one row
                data = pq.ParquetFile(handle).read()
        except Exception as error:  # pyarrow raises several types for damaged files
            if not self.fs.exists(path):
                return _GONE
            self._report(path, f"unreadable ({type(error).__name__}: {error})")
            return None
        found, types = {name: k for k, name in enumerate(data.column_names)}, data.schema.types
        missing = [f.name for f in schema if not f.nullable and f.name not in found]
        if missing:
            self._report(path, f"not a {table!r} file (missing {missing})")
            return None
        try:
            columns = [pa.nulls(len(data), f.type) if f.name not in found else
                       data.column(found[f.name]) if types[found[f.name]] == f.type else
                       data.column(found[f.name]).cast(f.type) for f in schema]
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            self._report(path, f"columns of the wrong type ({error})")
            return None
        if stored_at is not None:
            columns[-1] = pc.fill_null(columns[-1], pa.scalar(stored_at, TIMESTAMP))
        return pa.Table.from_arrays(columns, schema=schema)

    def _part(self, table: str, path: str, stored_at: dt.datetime | None):
        """``_conformed``, read once per store object: a file never changes once renamed."""
        if path not in self._parts:
            part = self._conformed(table, path, stored_at)
            if part is None or part is _GONE:
                return part
            self._parts[path] = part
        return self._parts[path]

    def _parts_of(self, table: str) -> tuple[tuple, list[tuple[str, pa.Table]]] | None:
        """(the listing, the readable files' rows) of one consistent listing; None after ``LIST_ATTEMPTS``
        listings that each lost a file to a compaction."""
        for _ in range(LIST_ATTEMPTS):
            listing = self._listing(table)
            parts = [(path, self._part(table, path, stored_at)) for path, stored_at in listing]
            if all(part is not _GONE for _, part in parts):
                listed = {path for path, _ in listing}
                self._parts = {path: part for path, part in self._parts.items()
                               if path in listed or not path.startswith(posixpath.join(self.root, table, ""))}
                return listing, [(path, part) for path, part in parts if part is not None]
        return None

    def read(self, table: str) -> pa.Table:
        """Every row of ``table``, one per key, the latest stored winning."""
        if table not in TABLES:
            raise StoreError(f"unknown table {table!r}; tables: {', '.join(TABLES)}")
        found = self._parts_of(table)
        if found is None:
            raise StoreError(f"the {table} table of {self.url} kept changing under this read (files merged away "
                             f"{LIST_ATTEMPTS} times): try again")
        listing, parts = found
        if self._merged.get(table, (None,))[0] != listing:
            merged = (latest_per_key(pa.concat_tables([part for _, part in parts]), KEYS[table], SETTLED.get(table))
                      if parts else TABLES[table].empty_table())
            self._merged[table] = (listing, merged)
        return self._merged[table][1]

    def compact(self, at_least: int = COMPACT_AT) -> dict[str, int]:
        """Merge each table whose folder holds ``at_least`` files or more into one file, every row kept with its
        storage time; remove stale temp files. Returns table -> files merged (module docstring)."""
        merged = {}
        for table in TABLES:
            entries = self._entries(table)
            self._remove_stale_temps(entries)
            if len(self._listing(table, entries)) < at_least:  # one listing, no file read: the common case
                continue
            found = self._parts_of(table)
            if found is None or len(found[1]) < at_least:
                continue
            parts = found[1]
            self.append_table(table, pa.concat_tables([part for _, part in parts]), prefix="compact")
            self.fs.rm([path for path, _ in parts])  # only files read: an unreadable one stays, reported
            merged[table] = len(parts)
        return merged

    def _remove_stale_temps(self, entries: list[dict]) -> None:
        cutoff = utc_now() - dt.timedelta(seconds=STALE_TEMP_S)
        for info in entries:
            stamp = storage_time(info)
            if posixpath.basename(info["name"]).startswith(".tmp-") and stamp is not None and stamp < cutoff:
                self.fs.rm(info["name"])

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
    """Keep the most recently stored row of each key (rows with equal keys are one record): the latest
    ``stored_at`` (a row without one is older than every row with one), then ``written_at``, then the later row;
    with ``settled`` (column, value), a row holding that value wins over every row without it."""
    import pandas as pd

    frame = data.select([*keys, "stored_at", "written_at"]).to_pandas(types_mapper=pd.ArrowDtype)
    frame["_row"] = range(len(frame))
    order = ["stored_at", "written_at", "_row"]
    if settled is not None:
        frame["_settled"] = equality_mask(data, *settled).to_numpy(zero_copy_only=False)
        order.insert(0, "_settled")
    keep = frame.sort_values(order, kind="stable", na_position="first").drop_duplicates(list(keys), keep="last")
    return data.take(pa.array(sorted(keep["_row"])))


def storage_time(info: dict) -> dt.datetime | None:
    """When the storage received a file, from an fsspec listing entry (local and NFS ``mtime``, S3
    ``LastModified``, GCS ``updated``, memory ``created``); None where the file system says nothing."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "timeCreated", "created"):
        value = info.get(key)
        if isinstance(value, (int, float)):
            return dt.datetime.fromtimestamp(value, dt.timezone.utc)
        if isinstance(value, str):
            try:
                value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
        if isinstance(value, dt.datetime):
            return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    return None


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
