"""``meap-scale study``: the options of a study (the run itself is ``meap_scale.study.command``)."""

from __future__ import annotations

def add_command(commands) -> None:
    from meap_scale.study.command import add_study_options
    from meap_scale.study.presets import STUDIES

    study = commands.add_parser("study", help="run a study (a Ray Tune sweep) into the results store",
                                description="Run one of the studies in studies/ (same options).")
    study.add_argument("study", choices=tuple(STUDIES), help="which study")
    add_study_options(study)
