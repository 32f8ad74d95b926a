"""ETags from version columns, and If-Match / If-None-Match handling for optimistic locking."""

import re

from project.errors import PreconditionFailed, PreconditionRequired

_TAG = re.compile(r'^\s*(?:W/)?"(\d{1,18})"\s*$')


def etag(version: int) -> str:
    return f'"{version}"'


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


def if_none_match_hits(request, version: int) -> bool:
    header = request.headers.get("If-None-Match")
    if header is None:
        return False
    return header.strip() == "*" or version in _versions(header)
