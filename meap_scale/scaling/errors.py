"""The error a fit raises when its data cannot determine the law."""


class ScalingFitError(ValueError):
    """The points cannot determine the requested law; the message says why and what would."""
