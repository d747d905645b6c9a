"""``meap-scale fit``: scaling laws, multipliers, paired verdicts and retrieval laws of a store, stored as fits."""

from __future__ import annotations

import argparse

from meap_scale.options import add_store_option, at_least


def add_command(commands) -> None:
    fit = commands.add_parser("fit", help="fit scaling laws to the results store and store the fits",
                              description="Fit Chinchilla's approach 3, L = E + A/N^alpha + B/D^beta, per group "
                                          "of finished runs; print the table and append the fits to the store.")
    add_store_option(fit, "the results store")
    fit.add_argument("--group-by", default="",
                     help="comma-separated runs columns for coarser groups than the default, one law per law key "
                          "(everything but N, D, seed and learning rate; docs/scaling.md); pooling corpora, "
                          "tokenizers or sequence lengths is refused")
    fit.add_argument("--approach", type=int, choices=(2, 3), default=3,
                     help="3: parametric L(N, D) (default); 2: IsoFLOP profiles (runs grouped by compute budget)")
    fit.add_argument("--n", choices=("total", "non_embedding"), default="total",
                     help="which parameter count is N: total (Chinchilla) or non-embedding (Kaplan)")
    fit.add_argument("--bootstrap", type=at_least(0), default=200,
                     help="bootstrap resamples for intervals (default: 200)")
    fit.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    fit.add_argument("--drop-highest", type=at_least(0), default=0,
                     help="approach 3: leave out this many highest-loss runs per group (Epoch AI drop 5)")
    fit.add_argument("--delta", type=float, default=1e-3, help="approach 3: Huber delta (default: 1e-3)")
    fit.add_argument("--study", help="only runs of this study")
    held = fit.add_mutually_exclusive_group()
    held.add_argument("--holdout", type=at_least(1), metavar="K",
                      help="extrapolation check (approach 3): fit without each group's K largest-compute runs, "
                           "predict them with prediction intervals and report errors and coverage")
    held.add_argument("--holdout-above", type=at_least(1), metavar="C",
                      help="extrapolation check (approach 3): hold out the runs above C FLOPs (C = 6ND)")


def _group_by(args: argparse.Namespace) -> tuple[str, ...] | None:
    """``--group-by a, b`` as a tuple of column names; None (the law key's groups) when empty."""
    return tuple(k.strip() for k in args.group_by.split(",") if k.strip()) or None


def _extrapolation_check(args: argparse.Namespace, store) -> int:
    from meap_scale.report.fit_tables import extrapolation_table
    from meap_scale.scaling import ScalingFitError
    from meap_scale.scaling.extrapolation_checks import extrapolation_checks, extrapolation_row

    if args.approach != 3:
        raise ScalingFitError("an extrapolation check fits approach 3; drop --approach 2")
    results = extrapolation_checks(store, holdout=args.holdout, above=args.holdout_above,
                                   group_by=_group_by(args),
                                   n_convention=args.n, study=args.study, bootstrap_samples=args.bootstrap,
                                   seed=args.seed, options={"drop_highest": args.drop_highest, "delta": args.delta})
    print(extrapolation_table(results))
    store.append("fits", [extrapolation_row(r, args.study) for r in results if r.check is not None])
    checked = sum(r.check is not None for r in results)
    print(f"{checked} of {len(results)} group(s) checked; checks appended to {args.store}")
    return 0 if checked == len(results) else 1


def run(args: argparse.Namespace) -> int:
    from meap_scale.report.fit_tables import fit_table_text, multiplier_table, paired_line, retrieval_table
    from meap_scale.scaling.comparisons import multiplier_rows, multipliers, paired_comparisons
    from meap_scale.scaling.from_store import fit_groups, fit_row
    from meap_scale.scaling.retrieval_groups import fitted_retrieval_laws, retrieval_multipliers, retrieval_rows
    from meap_scale.store import ResultsStore

    store = ResultsStore(args.store).require()
    if args.holdout or args.holdout_above:
        return _extrapolation_check(args, store)
    results = fit_groups(store, group_by=_group_by(args),
                         n_convention=args.n, study=args.study, bootstrap_samples=args.bootstrap, seed=args.seed,
                         approach=args.approach,
                         options={"drop_highest": args.drop_highest, "delta": args.delta} if args.approach == 3 else {})
    print(fit_table_text(results))
    found = multipliers(results)
    if found:
        print(multiplier_table(found))
    for comparison in paired_comparisons(store, study=args.study, seed=args.seed):
        print(paired_line(comparison))
    laws = fitted_retrieval_laws(store, results) if args.approach == 3 else []
    retrieval = retrieval_multipliers(laws, results)
    if laws:
        print(retrieval_table(laws, retrieval))
    store.append("fits", [fit_row(r, args.study) for r in results if r.fit is not None]
                 + multiplier_rows(found, args.study) + retrieval_rows(laws, retrieval, args.study))
    fitted = sum(r.fit is not None for r in results)
    print(f"{fitted} of {len(results)} group(s) fitted; fits appended to {args.store}")
    return 0 if fitted == len(results) else 1
