"""The preflight of a study (``meap_scale.preflight`` holds the checks): its runs as ``meap-scale plan`` lists them,
its store and cache, and its name against the study stored under it. ``run_study`` runs it first, so a study
started from Python is refused as one started from its script is, before the corpus is prepared or Ray starts."""

from __future__ import annotations

from meap_scale.preflight import OK, Preflight, preflight_runs
from meap_scale.spec_base import ConfigError
from meap_scale.store import ResultsStore, StoreError
from meap_scale.study import contract
from meap_scale.study.spec import DRIVER_CPU, StudySpec, anchored, study_runs


def preflight_study(spec: StudySpec, *, resume: bool = False, new_cluster: bool = False,
                    repeat_data: bool = False) -> Preflight:
    """The preflight of a study (a ``StudySpec``): its runs as ``meap-scale plan`` lists them (the stored study's
    with ``resume``), its store and cache, and its name against the study already stored under it."""
    spec = anchored(spec)
    try:
        store = ResultsStore(spec.storage)
        spec = anchored(contract.agreed(spec, store, resume))
        refused = None
    except (ConfigError, StoreError) as error:
        store, refused = None, error

    def named():
        if refused:
            raise refused
        stored = contract.is_stored(spec, store)
        return OK, f"{spec.name}: {'resumes the stored study' if stored else 'a new study'} in {spec.storage}"

    locations = [("--store", spec.storage, "results stores"),
                 ("--cache-dir", spec.base.data.resolved_cache_dir, "prepared corpora")]
    return preflight_runs(study_runs(spec), locations=locations, named=named,
                          extra_cpu=DRIVER_CPU if spec.base.workers > 1 else 0.0, new_cluster=new_cluster,
                          repeat_data=repeat_data)
