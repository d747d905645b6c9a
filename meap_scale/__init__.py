"""meap-scale: scaling studies of MEAP (mask-enhanced autoregressive prediction) against NTP on Ray."""

__version__ = "0.1.0"
