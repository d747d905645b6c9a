"""The results store on real Parquet files: round trips, concurrency, crashes, damage and old schemas."""

import datetime as dt
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from meap_scale.store import ResultsStore, StoreError
from meap_scale.store.schema import SCHEMA_VERSION, TABLES

UTC = dt.timezone.utc


def sample_value(field: pa.Field, i: int):
    kind = field.type
    if pa.types.is_string(kind):
        return f"{field.name}-{i}"
    if pa.types.is_boolean(kind):
        return i % 2 == 0
    if pa.types.is_integer(kind):
        return 1000 + i
    if pa.types.is_floating(kind):
        return 0.5 + i
    if pa.types.is_timestamp(kind):
        return dt.datetime(2026, 1, 1, 12, 0, i, 123456, tzinfo=UTC)
    raise AssertionError(kind)


def full_row(table: str, i: int = 0) -> dict:
    return {f.name: sample_value(f, i) for f in TABLES[table] if f.name not in ("written_at", "schema_version")}


@pytest.mark.parametrize("table", list(TABLES))
def test_every_column_round_trips(tmp_path, table):
    store = ResultsStore(str(tmp_path))
    rows = [full_row(table, i) for i in range(3)]
    store.append(table, rows)
    key = TABLES[table].names[0]
    read = sorted(store.read(table).to_pylist(), key=lambda r: r[key])
    assert len(read) == 3
    for written, got in zip(rows, read):
        assert {k: got[k] for k in written} == written
        assert got["schema_version"] == SCHEMA_VERSION and got["written_at"].tzinfo is not None


def test_a_study_selects_the_runs_it_trained_and_the_runs_it_found_stored(tmp_path):
    store = ResultsStore(str(tmp_path))
    store.append("runs", [{"run_id": "shared", "status": "finished", "study": "first"},
                          {"run_id": "own", "status": "finished", "study": "second"},
                          {"run_id": "other", "status": "finished", "study": "first"}])
    assert {r["run_id"] for r in store.runs({"study": "second"}).to_pylist()} == {"own"}  # an old store: column only
    store.add_members("second", ["shared", "own"], trial_id="t1")
    store.add_members("second", ["shared"], trial_id="t2")  # asked again: still one membership
    assert {r["run_id"] for r in store.runs({"study": "second"}).to_pylist()} == {"shared", "own"}
    assert {r["run_id"] for r in store.runs({"study": ["first", "second"], "status": "finished"}).to_pylist()} \
        == {"shared", "own", "other"}
    assert store.read("memberships").num_rows == 2


def test_the_latest_write_of_a_run_wins(tmp_path):
    store = ResultsStore(str(tmp_path))
    store.append_run({"run_id": "a", "status": "failed", "error": "boom"})
    store.append_run({"run_id": "a", "status": "finished", "val_loss": 3.0})
    store.append_run({"run_id": "b", "status": "finished", "val_loss": 4.0})
    runs = {r["run_id"]: r for r in store.runs().to_pylist()}
    assert runs["a"]["status"] == "finished" and runs["a"]["val_loss"] == 3.0 and runs["a"]["error"] is None
    assert store.has_run("a") and not store.has_run("c")
    assert store.runs({"val_loss": [3.0, 4.0]}).num_rows == 2


def test_a_finished_run_is_never_superseded_by_a_later_unfinished_row(tmp_path):
    store = ResultsStore(str(tmp_path))
    store.append_run({"run_id": "a", "status": "finished", "val_loss": 3.0})
    store.append_run({"run_id": "a", "status": "stopped", "val_loss": 5.0})  # a late record of a stop
    store.append_run({"run_id": "b", "status": "interrupted", "val_loss": 6.0})
    store.append_run({"run_id": "b", "status": "stopped", "val_loss": 5.5})
    runs = {r["run_id"]: r for r in store.runs().to_pylist()}
    assert (runs["a"]["status"], runs["a"]["val_loss"]) == ("finished", 3.0)
    assert (runs["b"]["status"], runs["b"]["val_loss"]) == ("stopped", 5.5)  # otherwise the latest wins


def test_failed_runs_do_not_count_as_done(tmp_path):
    store = ResultsStore(str(tmp_path))
    store.append_run({"run_id": "x", "status": "failed", "error": "Traceback ..."})
    assert not store.has_run("x") and store.has_run("x", status="failed")


def test_curves_are_stored_in_long_format(tmp_path):
    store = ResultsStore(str(tmp_path))
    store.append_curve("r", [{"step": 1, "tokens": 10, "train_loss": 5.0, "lr": 1e-3},
                             {"step": 2, "tokens": 20, "train_loss": 4.0, "val_loss": 4.5, "lr": 5e-4}])
    curve = store.curves("r").to_pylist()
    assert {(r["step"], r["metric"]) for r in curve} == {(1, "train_loss"), (1, "lr"), (2, "train_loss"),
                                                          (2, "val_loss"), (2, "lr")}


def _append_from_process(root: str, worker: int) -> None:
    store = ResultsStore(root)
    for i in range(5):
        store.append_run({"run_id": f"w{worker}-r{i}", "status": "finished", "val_loss": float(i)})
        store.append_run({"run_id": "shared", "status": "finished", "val_loss": float(worker)})


def _compact_until_told(root: str, stop: str, merges: str) -> None:
    store, merged = ResultsStore(root), 0
    while not os.path.exists(stop):
        merged += sum(store.compact(at_least=2).values())
    with open(merges, "w") as handle:
        handle.write(str(merged))


def test_sixteen_concurrent_writers_and_a_compactor_lose_and_duplicate_no_row(tmp_path):
    """Sixteen processes append while another merges the files as fast as it can: readers that listed a file the
    compactor then deleted list again, so no read ever sees fewer runs than the one before it."""
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append_from_process, args=(str(tmp_path), w)) for w in range(16)]
    compactor = context.Process(target=_compact_until_told,
                                args=(str(tmp_path), str(tmp_path / "stop"), str(tmp_path / "merges")))
    for process in (compactor, *workers):
        process.start()
    reader, seen = ResultsStore(str(tmp_path)), [0]
    try:
        while any(process.is_alive() for process in workers):
            for store in (reader, ResultsStore(str(tmp_path))):  # one that reads new files only, one that reads all
                seen.append(store.runs().num_rows)
                assert seen[-1] >= seen[-2] and not store.problems, (seen, store.problems)
        for process in workers:
            process.join(120)
            assert process.exitcode == 0
    finally:
        (tmp_path / "stop").touch()
        compactor.join(120)
    assert compactor.exitcode == 0 and int((tmp_path / "merges").read_text()) > 0
    for store in (reader, ResultsStore(str(tmp_path))):
        ids = store.runs()["run_id"].to_pylist()
        assert len(ids) == len(set(ids)) == 16 * 5 + 1
        assert {f"w{w}-r{i}" for w in range(16) for i in range(5)} <= set(ids)
        assert not store.problems


def _row(run_id: str, status: str, written_at: dt.datetime) -> pa.Table:
    row = {"run_id": run_id, "status": status, "written_at": written_at, "schema_version": SCHEMA_VERSION}
    return pa.Table.from_pylist([row], schema=TABLES["runs"])


def test_the_row_stored_last_wins_though_its_writers_clock_ran_behind_and_compaction_keeps_it_so(tmp_path):
    """A node whose clock runs an hour ahead wrote first; the row stored after it is the run's record, as the
    storage's clock says, before and after the files are merged (every row kept)."""
    store = ResultsStore(str(tmp_path))
    now = dt.datetime.now(UTC)
    store.append_table("runs", _row("r", "failed", now + dt.timedelta(hours=1)))
    time.sleep(0.05)  # file times have a resolution of a few milliseconds here
    store.append_table("runs", _row("r", "interrupted", now))
    assert store.runs()["status"].to_pylist() == ["interrupted"]
    assert store.compact(at_least=2) == {"runs": 2}
    assert len(os.listdir(tmp_path / "runs")) == 1
    merged = pq.read_table(tmp_path / "runs")
    assert merged.num_rows == 2 and merged["stored_at"].null_count == 0
    for reader in (store, ResultsStore(str(tmp_path))):
        assert reader.runs()["status"].to_pylist() == ["interrupted"]
    store.append_table("runs", _row("r", "finished", now - dt.timedelta(hours=1)))  # a settled row wins anyway
    assert ResultsStore(str(tmp_path)).runs()["status"].to_pylist() == ["finished"]


def test_a_store_object_reads_each_file_once_and_compaction_merges_only_past_its_threshold(tmp_path, monkeypatch):
    store = ResultsStore(str(tmp_path))
    for i in range(5):
        store.append_run({"run_id": f"r{i}", "status": "finished"})
    opened = []
    conformed = ResultsStore._conformed
    monkeypatch.setattr(ResultsStore, "_conformed", lambda self, table, path, stored_at: opened.append(path) or
                        conformed(self, table, path, stored_at))
    assert store.runs().num_rows == 5 and len(opened) == 5
    store.append_run({"run_id": "r5", "status": "finished"})
    assert store.runs().num_rows == 6 and len(opened) == 6  # only the new file
    assert store.compact(at_least=7) == {} and len(os.listdir(tmp_path / "runs")) == 6
    assert store.compact(at_least=6) == {"runs": 6} and len(os.listdir(tmp_path / "runs")) == 1


def test_compaction_removes_the_temp_files_of_writers_killed_long_ago_and_no_others(tmp_path):
    store = ResultsStore(str(tmp_path))
    store.append_run({"run_id": "r", "status": "finished"})
    old, fresh = tmp_path / "runs" / ".tmp-part-old.parquet", tmp_path / "runs" / ".tmp-part-new.parquet"
    old.write_bytes(b"half a file"), fresh.write_bytes(b"a write in progress")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    store.compact()
    assert not old.exists() and fresh.exists()
    assert store.runs()["run_id"].to_pylist() == ["r"] and not store.problems


WRITER = """
import sys
import pyarrow as pa
from meap_scale.store import ResultsStore
from meap_scale.store.schema import TABLES
store = ResultsStore(sys.argv[1])
n = 2_000_000
data = pa.table({"run_id": pa.array(["r%d" % (i % 400) for i in range(n)]), "step": pa.array(range(n)),
                 "tokens": pa.array(range(n)), "metric": pa.array(["train_loss"] * n),
                 "value": pa.array([1.0] * n), "written_at": pa.array([0] * n, pa.timestamp("us", tz="UTC")),
                 "schema_version": pa.array([1] * n, pa.int32()),
                 "stored_at": pa.nulls(n, pa.timestamp("us", tz="UTC"))}, schema=TABLES["curves"])
print("writing", flush=True)
while True:
    store.append_table("curves", data)  # nearly all of the loop's time is spent inside the write
"""


def test_a_writer_killed_mid_write_leaves_no_visible_partial_file(tmp_path):
    folder = tmp_path / "curves"
    for attempt in range(5):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        assert writer.stdout.readline().strip() == "writing"
        time.sleep(1.5 + attempt * 0.37)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        if any(name.startswith(".tmp-") for name in os.listdir(folder)):
            break
    else:
        pytest.fail("the writer was never caught mid-write")
    store = ResultsStore(str(tmp_path))
    curves = store.read("curves")
    assert not store.problems
    assert curves.num_rows == 2_000_000  # complete files only; identical rows collapse to one record


def test_corrupt_and_foreign_files_are_reported_and_skipped(tmp_path):
    store = ResultsStore(str(tmp_path))
    store.append_run({"run_id": "good", "status": "finished"})
    (tmp_path / "runs" / "part-broken.parquet").write_bytes(b"PAR1 this is not parquet")
    pq.write_table(pa.table({"something": [1, 2]}), tmp_path / "runs" / "part-foreign.parquet")
    (tmp_path / "runs" / "notes.txt").write_text("hello")
    with pytest.warns(UserWarning, match="results store: skipping"):
        runs = store.runs()
    assert runs["run_id"].to_pylist() == ["good"]
    reasons = {os.path.basename(p.path): p.reason for p in store.problems}
    assert reasons.keys() == {"part-broken.parquet", "part-foreign.parquet", "notes.txt"}
    assert "unreadable" in reasons["part-broken.parquet"] and "missing" in reasons["part-foreign.parquet"]


def test_a_file_written_with_an_older_schema_still_reads(tmp_path):
    old = pa.table({"run_id": ["old"], "status": ["finished"], "val_loss": [3.5],
                    "written_at": pa.array([dt.datetime(2025, 1, 1, tzinfo=UTC)], pa.timestamp("us", tz="UTC"))})
    (tmp_path / "runs").mkdir()
    pq.write_table(old, tmp_path / "runs" / "part-v0.parquet")
    store = ResultsStore(str(tmp_path))
    store.append_run({"run_id": "new", "status": "finished", "mfu": 0.3})
    rows = {r["run_id"]: r for r in store.runs().to_pylist()}
    assert rows["old"]["val_loss"] == 3.5 and rows["old"]["mfu"] is None and rows["old"]["schema_version"] is None
    assert rows["new"]["mfu"] == 0.3


def test_rows_with_unknown_columns_are_refused(tmp_path):
    with pytest.raises(StoreError, match=r"no column\(s\) \['val_los'\]"):
        ResultsStore(str(tmp_path)).append_run({"run_id": "a", "status": "finished", "val_los": 1.0})


def test_file_urls_work_and_missing_filesystems_fail_clearly(tmp_path):
    store = ResultsStore(f"file://{tmp_path}")
    store.append_run({"run_id": "a", "status": "finished"})
    assert ResultsStore(str(tmp_path)).has_run("a")
    with pytest.raises(StoreError, match="gcsfs"):
        ResultsStore("gs://some-bucket/study")


def test_pandas_reads_the_store_folder_directly(tmp_path):
    import pandas as pd

    store = ResultsStore(str(tmp_path))
    store.append_run({"run_id": "a", "status": "finished", "val_loss": 2.0})
    assert pd.read_parquet(tmp_path / "runs")["val_loss"].tolist() == [2.0]
    assert store.to_pandas()["run_id"].tolist() == ["a"]


def test_a_row_records_the_commit_the_submitter_names_else_this_checkouts(monkeypatch):
    import json
    import subprocess

    from meap_scale.store.rows import environment

    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    monkeypatch.delenv("MEAP_SCALE_GIT_COMMIT", raising=False)
    here = environment()
    assert here["git_commit"] == head and "working_dir_package" not in json.loads(here["versions_json"])
    monkeypatch.setenv("MEAP_SCALE_GIT_COMMIT", "0123abc")
    assert environment()["git_commit"] == "0123abc"
