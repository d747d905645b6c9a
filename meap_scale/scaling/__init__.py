"""Scaling-law fits over the results store: Chinchilla's approach 3 (parametric) with bootstrap intervals."""

from meap_scale.scaling.errors import ScalingFitError
from meap_scale.scaling.parametric import ParametricFit, fit_parametric

__all__ = ["ParametricFit", "ScalingFitError", "fit_parametric"]
