"""Scaling laws and the statistics over them: Chinchilla's approach 3 (``parametric``) and 2 (``isoflop``), compute
multipliers (``compare``), the paired verdict (``paired``), extrapolation checks, two-step retrieval laws, power, and
their calibration on simulated studies (``simulate``, ``calibration``). Over a results store: ``from_store`` fits its
law groups, ``extrapolation_checks``, ``comparisons`` (MEAP against NTP), ``retrieval_groups`` and ``pilot`` (what a
pilot store tells a plan) use those fits.
``fit_parametric`` is re-exported as the entry point for fitting points of one's own."""

from meap_scale.scaling.errors import ScalingFitError
from meap_scale.scaling.parametric import ParametricFit, fit_parametric

__all__ = ["ParametricFit", "ScalingFitError", "fit_parametric"]
