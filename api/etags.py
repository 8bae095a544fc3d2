"""Job versions as HTTP carries them: the `ETag` of an answer about one job, the `If-Match` of a PATCH."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, Header, Response

from core.errors import Invalid
from core.models import JobPublic

ENTITY_TAG = re.compile(r'\s*(W/)?"([^"]*)"\s*')
VERSION_DIGITS = 9  # a version is a 32-bit INTEGER column: nine digits always fit


def tagged(response: Response, job: JobPublic) -> JobPublic:
    """The job's version as a strong ETag (`"3"`), for the If-Match of the next PATCH."""
    response.headers["ETag"] = f'"{job.version}"'
    return job


def if_match(
    if_match: Annotated[
        str | None,
        Header(
            description='The ETag of the job as you last read it (`"3"`): a PATCH on a job that has '
            "changed since is refused with 412. Without it, the last write wins.",
        ),
    ] = None,
) -> frozenset[int] | None:
    """The versions the header accepts; None when absent or `*` (any version of a job that exists).

    Weak tags never match, as If-Match compares strongly (RFC 9110 section 13.1.1)."""
    if if_match is None or if_match.strip() == "*":
        return None
    versions = set()
    for part in if_match.split(","):
        tag = ENTITY_TAG.fullmatch(part)
        if tag is None:
            raise Invalid(
                'If-Match takes entity tags as ETag gives them ("3", quotes included) or *',
                ("header", "if-match"),
            )
        weak, opaque = tag.groups()
        # A version is a short run of ASCII digits: '²' passes `isdigit` but not `int`, and thousands of
        # digits pass neither; such a tag matches no version, as any other unknown one.
        if not weak and opaque.isascii() and opaque.isdigit() and len(opaque) <= VERSION_DIGITS:
            versions.add(int(opaque))
    return frozenset(versions)


IfMatch = Annotated[frozenset[int] | None, Depends(if_match)]
