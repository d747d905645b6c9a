"""Locations that may be fsspec URLs (``s3://``, ``gs://``, ``file://``, ``memory://``) or local paths."""

from __future__ import annotations

import os


def is_url(location: str) -> bool:
    return "://" in location


def local_path(location: str | None) -> str | None:
    """The absolute folder a plain path or a ``file://`` URL names (on whichever node opens it); None for other
    URLs (object stores, the same place from everywhere) and for no location."""
    if not location:
        return None
    if location.startswith("file://"):
        location = location[len("file://"):]
    return None if is_url(location) else os.path.abspath(os.path.expanduser(location))


def filesystem(location: str, error: type[Exception], what: str):
    """(fsspec filesystem, path inside it); raises ``error`` (the caller's own type) naming ``what`` the
    location is for when its protocol is unknown or needs a package that is not installed. Without fsspec's
    listings cache: s3fs and gcsfs keep each folder listing for the life of the process (fsspec caches the
    filesystem objects too), and other processes write here (trials, workers, other drivers): a cached
    listing missed a checkpoint uploaded since, and would miss store files."""
    import fsspec.core

    try:
        return fsspec.core.url_to_fs(location, use_listings_cache=False)
    except ImportError as cause:
        raise error(f"{what} {location!r} needs a filesystem package that is not installed: {cause}") from cause
    except ValueError as cause:
        raise error(f"{what} {location!r} is not a path or a known URL: {cause}") from cause
