"""Whether a location names an fsspec URL (``s3://``, ``gs://``, ``file://``, ``memory://``) or a local path."""


def is_url(location: str) -> bool:
    return "://" in location
