"""``build_report``: the results store in, one self-contained HTML file (and optionally figure files) out."""

from __future__ import annotations

import datetime as dt
import os
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from meap_scale.report import forecasts as F
from meap_scale.report import objective_sections as O
from meap_scale.report import sections as S
from meap_scale.report.data import load_report_data
from meap_scale.report.page import render_page
from meap_scale.scaling.comparisons import paired_comparisons
from meap_scale.scaling.errors import ScalingFitError
from meap_scale.scaling.extrapolation_checks import GroupExtrapolation, extrapolation_checks
from meap_scale.scaling.from_store import GroupFit, StoredFits, fit_groups, stored_fits
from meap_scale.scaling.paired import PairedComparison
from meap_scale.scaling.parametric import MIN_DRAWS
from meap_scale.scaling.retrieval_groups import fitted_retrieval_laws, retrieval_multipliers
from meap_scale.store import ResultsStore

CPU_BANNER = ("CPU-scale runs only: a plumbing demo. At this scale MEAP and NTP both retrieve at chance and their "
              "loss differences are not evidence about MEAP (docs/design.md section 10).")
CHANCE_BANNER = ("Every retrieval score in this store is within two standard errors of chance: no run retrieves "
                 "key information yet, for either objective.")
FIGURE_FORMATS = ("svg", "png")


@dataclass(frozen=True)
class BuiltReport:
    path: str
    sections: tuple[str, ...]
    missing: tuple[str, ...]
    figures: tuple[str, ...]
    size_bytes: int
    seconds: float


def _fits(store: ResultsStore, study: str | None, bootstrap: int, approach: int,
          stored: StoredFits | None = None) -> list[GroupFit]:
    """The fits of ``approach``; none (rather than an error) when the store has nothing to fit. With ``stored``
    (approach 3), fitted as ``meap-scale fit`` fitted them: the same settings and seed give the same intervals."""
    try:
        if stored is not None:
            return fit_groups(store, study=study, bootstrap_samples=stored.bootstrap, seed=stored.seed,
                              n_convention=stored.n_convention, approach=approach, options=stored.options)
        return fit_groups(store, study=study, bootstrap_samples=bootstrap, approach=approach)
    except ScalingFitError:
        return []


def replay_note(stored: StoredFits | None, fits: list[GroupFit], bootstrap: int) -> str:
    """What the report's approach-3 intervals are: the stored fits' (and which laws have new runs since), or its
    own with ``bootstrap`` refits where ``meap-scale fit`` stored none."""
    if stored is None:
        return (f"No approach-3 fits of meap-scale fit are stored for these runs: the report fitted them itself with "
                f"{bootstrap} bootstrap refits (run meap-scale fit to store fits the report then follows).")
    changed = [S.label(f.group) for f in fits if f.fit is not None and not stored.same_runs(f)]
    note = (f"Approach-3 fits follow meap-scale fit's stored fits of {stored.written_at:%Y-%m-%d %H:%M} UTC: "
            f"{stored.bootstrap} bootstrap refits, seed {stored.seed}, N {stored.n_convention}, delta {stored.delta:g}, "
            f"{stored.drop_highest} highest losses dropped; the same runs give the same intervals.")
    if changed:
        note += f" Runs changed since for: {'; '.join(changed)} (fitted now with those settings)."
    return note


def _extrapolations(store: ResultsStore, study: str | None, bootstrap: int, holdout: int) -> list[GroupExtrapolation]:
    """Each group's check with its ``holdout`` largest-compute runs held out; none when nothing can be checked."""
    try:
        return extrapolation_checks(store, study=study, holdout=holdout, bootstrap_samples=bootstrap)
    except ScalingFitError:
        return []


def _paired(store: ResultsStore, study: str | None) -> list[PairedComparison]:
    try:
        return paired_comparisons(store, study=study)
    except ScalingFitError:
        return []


def _version() -> str:
    try:
        return version("meap-scale")
    except PackageNotFoundError:
        return "unknown"


def build_report(store_url: str, out: str, *, study: str | None = None, figures_dir: str | None = None,
                 bootstrap: int = 100, holdout: int = 2) -> BuiltReport:
    """Write the report for ``store_url`` (one ``study`` or all) to ``out``; ``figures_dir`` also gets every
    figure as SVG and PNG. Fits are made here, with ``bootstrap`` resamples for their bands; the extrapolation
    check holds out each group's ``holdout`` largest-compute runs."""
    started = time.perf_counter()
    store = ResultsStore(store_url)
    data = load_report_data(store, study)
    stored = stored_fits(store, study)
    fits, isoflops = _fits(store, study, bootstrap, 3, stored), _fits(store, study, bootstrap, 2)
    generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    laws = fitted_retrieval_laws(store, fits)
    retrieval = retrieval_multipliers(laws, fits)
    checks = _extrapolations(store, study, bootstrap, holdout) if bootstrap >= MIN_DRAWS else []
    built = [S.summary(data), S.scaling(data, fits, isoflops), S.fit_table(fits, isoflops, replay_note(stored, fits,
                                                                                                       bootstrap)),
             F.extrapolation(checks, bootstrap), O.meap_vs_ntp(data, fits, _paired(store, study)),
             O.mask_ratio(data, O.importances(data)), O.retrieval(data), F.retrieval_laws(laws, retrieval),
             S.curves(data)]
    if data.runs:
        built.append(S.Section("runs", "All runs", "Every run in the store: click a column to sort, type to filter.",
                               run_columns=S.RUN_COLUMNS))
    built.append(S.provenance(data, generated, _version()))
    sections = [s for s in built if isinstance(s, S.Section)]
    missing = [s for s in built if isinstance(s, S.Missing)]
    figures = {f.name: f.spec for s in sections for f in s.figures}
    banners = []
    if not data.runs:
        banners.append(f"The store at {store.url} has no runs" + (f" for study {study!r}" if study else "")
                       + ": run a study (python studies/mask_ratio_sweep.py) and build the report again.")
    elif not any(r["use_gpu"] for r in data.runs):
        banners.append(CPU_BANNER)
    if O.at_chance(data):
        banners.append(CHANCE_BANNER)
    title = f"meap-scale report: {study}" if study else "meap-scale report"
    page = render_page(title, f"{len(data.runs)} runs from {store.url}, generated {generated}", banners, sections,
                  missing, figures, S.run_records(data))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w", encoding="utf-8") as handle:
        handle.write(page)
    if figures_dir:
        export_figures(figures, figures_dir)
    return BuiltReport(path=os.path.abspath(out), sections=tuple(s.key for s in sections),
                       missing=tuple(m.key for m in missing), figures=tuple(figures),
                       size_bytes=len(page.encode()), seconds=time.perf_counter() - started)


def export_figures(figures: dict[str, dict], folder: str) -> list[str]:
    """Every figure as ``<name>.svg`` and ``<name>.png`` (rendered offline by vl-convert), for papers."""
    import vl_convert

    os.makedirs(folder, exist_ok=True)
    written = []
    for name, spec in figures.items():
        path = os.path.join(folder, name)
        with open(f"{path}.svg", "w", encoding="utf-8") as handle:
            handle.write(vl_convert.vegalite_to_svg(spec))
        with open(f"{path}.png", "wb") as handle:
            handle.write(vl_convert.vegalite_to_png(spec, scale=2))
        written += [f"{path}.svg", f"{path}.png"]
    return written
