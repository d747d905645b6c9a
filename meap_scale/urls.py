"""Locations that may be fsspec URLs (``s3://``, ``gs://``, ``file://``, ``memory://``) or local paths."""


def is_url(location: str) -> bool:
    return "://" in location


def filesystem(location: str, error: type[Exception], what: str):
    """(fsspec filesystem, path inside it); raises ``error`` (the caller's own type) naming ``what`` the
    location is for when its protocol is unknown or needs a package that is not installed."""
    import fsspec.core

    try:
        return fsspec.core.url_to_fs(location)
    except ImportError as cause:
        raise error(f"{what} {location!r} needs a filesystem package that is not installed: {cause}") from cause
    except ValueError as cause:
        raise error(f"{what} {location!r} is not a path or a known URL: {cause}") from cause
