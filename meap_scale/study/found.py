"""Whether a study's run is stored already: by its run id, or by its training where the corpus it reads was read from
another path when the run was trained (the id is the spec's, known before the corpus is read; ``training_key``)."""

from __future__ import annotations

from meap_scale.config import RunSpec
from meap_scale.data import PreparedData
from meap_scale.store import ResultsStore
from meap_scale.store.rows import run_identity, training_key


def stored_training(store: ResultsStore, run: RunSpec, prepared: PreparedData) -> dict | None:
    """The finished row of ``run``: by its id, else by its training (``training_key``), the same spec on the same
    corpus content stored under another id because the corpus was read from another path then."""
    found = store.runs({"run_id": run.run_id, "status": "finished"}).to_pylist()
    if found:
        return found[0]
    mine = training_key({"data_fingerprint": prepared.fingerprint, "blocks_fingerprint": prepared.blocks_fingerprint},
                        run_identity({"config_json": run.to_json()}))
    if mine is None:
        return None
    # Columns the training key holds too narrow the rows whose configs are parsed: a trial asks for every run
    # not stored by id, and a study's store holds thousands of runs of one corpus.
    columns = {"data_fingerprint": prepared.fingerprint, "status": "finished", "seed": run.seed,
               "tokens_budget": run.tokens_trained, "model_size": run.model.size, "objective": run.objective.name}
    if prepared.blocks_fingerprint is not None:  # an equality filter never matches nulls
        columns["blocks_fingerprint"] = prepared.blocks_fingerprint
    alike = store.runs(columns).to_pylist()
    return next((row for row in alike if training_key(row, run_identity(row)) == mine), None)
