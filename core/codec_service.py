"""The remote codec of the Temporal Web UI and CLI: it decrypts for a caller only the payloads of jobs the
caller may see (`Principal.sees`), so pointing the UI at it shows each person their own jobs' data."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, Field, PlainSerializer
from sqlmodel import col, select
from temporalio.api.common.v1 import Payload

from core.auth import Principal
from core.codec import JOB_ID, Keyring, is_encrypted
from core.db import Sessions
from core.models import Job


def _base64(value: object) -> bytes:
    """Protobuf JSON bytes: standard base64, or its URL-safe variant, which protobuf JSON also accepts."""
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        raise ValueError("must be a base64 string")
    text = value.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        raise ValueError("must be base64") from None


Base64 = Annotated[
    bytes,
    BeforeValidator(_base64),
    PlainSerializer(lambda data: base64.b64encode(data).decode(), return_type=str),
]


class WirePayload(BaseModel):
    """A Temporal Payload in protobuf JSON: metadata values and data base64-encoded."""

    metadata: dict[str, Base64] = Field(default_factory=dict)
    data: Base64 = b""

    @classmethod
    def of(cls, payload: Payload) -> WirePayload:
        return cls(metadata=dict(payload.metadata), data=payload.data)

    def proto(self) -> Payload:
        return Payload(metadata=self.metadata, data=self.data)


class WirePayloads(BaseModel):
    """The body of both codec calls and of their answers (Temporal's remote codec protocol)."""

    payloads: list[WirePayload] = Field(max_length=10_000)


class CodecService:
    def __init__(self, sessions: Sessions, keys: Keyring) -> None:
        self.sessions = sessions
        self.keys = keys

    async def decode(self, principal: Principal, body: WirePayloads) -> WirePayloads:
        """Each payload decrypted if the caller may see its job (admins: also payloads of no job, such as
        the reconcile workflow's, or of a deleted one); any other payload, or one that does not decrypt,
        comes back unchanged."""
        payloads = [p.proto() for p in body.payloads]
        owners = await self._owners({job_id for p in payloads if (job_id := _job_of(p)) is not None})
        return WirePayloads(payloads=[WirePayload.of(self._decoded(principal, owners, p)) for p in payloads])

    def encode(self, body: WirePayloads) -> WirePayloads:
        """For the UI's and CLI's signals and starts: encrypted with the newest key and no job, so only
        admins can read them back through `decode`."""
        return WirePayloads(payloads=[WirePayload.of(self.keys.encrypt(p.proto())) for p in body.payloads])

    def _decoded(self, principal: Principal, owners: dict[str, str], payload: Payload) -> Payload:
        if not is_encrypted(payload):
            return payload
        job_id = _job_of(payload)
        owner = owners.get(job_id) if job_id else None
        if not (principal.sees(owner) if owner else principal.is_admin):
            return payload
        try:
            return self.keys.decrypt(payload)
        except ValueError:
            return payload

    async def _owners(self, job_ids: set[str]) -> dict[str, str]:
        """The owner of each live job: as with their runs, a deleted job's payloads are for admins only."""
        if not job_ids:
            return {}
        async with self.sessions() as session:
            rows = await session.exec(
                select(Job.id, Job.owner_id).where(col(Job.id).in_(job_ids), col(Job.deleted_at).is_(None))
            )
            return dict(rows.all())


def _job_of(payload: Payload) -> str | None:
    """The job a payload names, if it names one as Chronos writes them (UTF-8 without NUL): the metadata
    comes from whoever calls the endpoint, and a name no job can have is no job's (admins only)."""
    raw = payload.metadata.get(JOB_ID)
    if raw is None:
        return None
    try:
        job_id = raw.decode()
    except UnicodeDecodeError:
        return None
    return None if "\x00" in job_id else job_id
