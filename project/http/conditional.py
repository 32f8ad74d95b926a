"""ETags from version columns, and If-Match / If-None-Match handling for optimistic locking."""

import re

from project.errors import PreconditionFailed, PreconditionRequired

# A version, optionally followed by what else the representation shows that the version does not
# count ("3-17": version 3, 17 units available).
_TAG = re.compile(r'^\s*(?:W/)?"(\d{1,18})(?:-\d{1,18})?"\s*$')


def etag(version: int, *, available: int | None = None) -> str:
    """The ETag of a row at `version`; with `available`, of a product as shown with that
    availability (which changes without the version), so a cached copy goes stale with it."""
    return f'"{version}"' if available is None else f'"{version}-{available}"'


def _versions(header: str) -> list[int | None]:
    versions = []
    for part in header.split(","):
        match = _TAG.match(part)
        versions.append(int(match.group(1)) if match else None)
    return versions


def if_match_version(request, *, required: bool) -> int | None:
    """The version named by If-Match. Missing: 428 when `required`, else None. Unreadable: 412."""
    header = request.headers.get("If-Match")
    if header is None:
        if required:
            raise PreconditionRequired()
        return None
    versions = [v for v in _versions(header) if v is not None]
    if len(versions) != 1:
        raise PreconditionFailed('If-Match must name exactly one current ETag, like "3".')
    return versions[0]


def if_none_match_hits(request, tag: str) -> bool:
    """Whether If-None-Match names `tag` (an `etag()`), compared weakly as RFC 9110 asks, or is `*`."""
    header = request.headers.get("If-None-Match")
    if header is None:
        return False
    if header.strip() == "*":
        return True
    return any(part.strip().removeprefix("W/") == tag for part in header.split(","))
