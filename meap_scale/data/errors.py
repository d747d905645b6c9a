"""The error data preparation raises for bad input, before any training starts."""


class DataError(ValueError):
    """The corpus or tokenizer cannot be used; the message says which input and what to do."""
