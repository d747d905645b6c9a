"""Corpus sources, tokenizers, packing into Arrow blocks, and the order ranks read them in."""

from meap_scale.data.errors import DataError
from meap_scale.data.prepare import PreparedData, prepare_data

__all__ = ["DataError", "PreparedData", "prepare_data"]
