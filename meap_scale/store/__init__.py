"""The Arrow/Parquet results store: runs, curves, evals and fits of every study."""

from meap_scale.store.store import Problem, ResultsStore, StoreError

__all__ = ["Problem", "ResultsStore", "StoreError"]
