"""Payload encryption: every payload Chronos hands Temporal (workflow and activity inputs and results,
signals, queries, schedule actions, memos) is AES-256-GCM ciphertext, so the Temporal server, its database
and anyone with its Web UI never read an action's secrets in clear. The same keys seal the secrets the SQL
mirror stores (`Keyring.seal_text`, used by the mirror's `SealedJSON` columns).

A payload's plaintext metadata names the key (`encryption-key-id`) and, when the SDK's serialization
context names a job's workflow, the job (`chronos-job-id`): the codec endpoint decides from it whose eyes
may see the payload. The job id is authenticated (GCM associated data), so editing it breaks decryption.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import (
    ActivitySerializationContext,
    PayloadCodec,
    SerializationContext,
    WithSerializationContext,
    WorkflowSerializationContext,
)

from core.config import Settings
from core.keyfiles import write_secret
from core.payloads import job_of_workflow

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
JOB_ID = "chronos-job-id"
NONCE_BYTES = 12
KEY_BYTES = 32
# Key ids end up in every payload's metadata and in the setting's `id:key,…` syntax.
_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# A sealed text: `sealed:v1:<key id>:<urlsafe base64 of nonce + ciphertext>`.
SEALED = "sealed:v1:"
# Associated data of sealed texts: a sealed text never decrypts as a payload, nor a payload as a text.
_TEXT_AAD = b"chronos-sealed-text"


@dataclass(frozen=True)
class Keyring:
    """The keys by id, each with its one AESGCM object; `newest` encrypts, every key decrypts."""

    newest: str
    ciphers: Mapping[str, AESGCM]

    def encrypt(self, payload: Payload, job_id: str | None = None) -> Payload:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self.ciphers[self.newest].encrypt(nonce, payload.SerializeToString(), _aad(job_id))
        metadata = {"encoding": ENCODING, KEY_ID: self.newest.encode()}
        if job_id:
            metadata[JOB_ID] = job_id.encode()
        return Payload(metadata=metadata, data=nonce + sealed)

    def decrypt(self, payload: Payload) -> Payload:
        """The original payload; ValueError for an unknown key or a payload that does not authenticate."""
        key_id = payload.metadata.get(KEY_ID, b"").decode(errors="replace")
        cipher = self._cipher(key_id, "payload")
        job_id = payload.metadata.get(JOB_ID, b"").decode(errors="replace")
        data = payload.data
        try:
            plain = cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], _aad(job_id))
        except InvalidTag:
            raise ValueError(f"payload does not authenticate under key {key_id!r}") from None
        return Payload.FromString(plain)

    def seal_text(self, text: str) -> str:
        """The text encrypted with the newest key, as a string a JSON column can hold (`SEALED…`)."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self.ciphers[self.newest].encrypt(nonce, text.encode(), _TEXT_AAD)
        return f"{SEALED}{self.newest}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def open_text(self, text: str) -> str:
        """The text `seal_text` sealed; a text that is not sealed (written before sealing) as it is.
        ValueError for an unknown key or a sealed text that does not authenticate."""
        if not text.startswith(SEALED):
            return text
        key_id, _, encoded = text.removeprefix(SEALED).partition(":")
        cipher = self._cipher(key_id, "sealed text")
        try:
            data = base64.urlsafe_b64decode(encoded)
            return cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], _TEXT_AAD).decode()
        except (binascii.Error, InvalidTag, UnicodeDecodeError):
            raise ValueError(f"sealed text does not authenticate under key {key_id!r}") from None

    def _cipher(self, key_id: str, what: str) -> AESGCM:
        cipher = self.ciphers.get(key_id)
        if cipher is None:
            raise ValueError(
                f"{what} encrypted with key {key_id!r}, which CHRONOS_ENCRYPTION_KEYS does not hold"
            )
        return cipher


def job_of_context(context: SerializationContext) -> str | None:
    """The job whose workflow (or whose workflow's activity) a payload belongs to, if any: all the codec
    takes from a serialization context."""
    workflow_id = (
        context.workflow_id
        if isinstance(context, WorkflowSerializationContext | ActivitySerializationContext)
        else None
    )
    return job_of_workflow(workflow_id) if workflow_id else None


def is_encrypted(payload: Payload) -> bool:
    return payload.metadata.get("encoding") == ENCODING


def _aad(job_id: str | None) -> bytes:
    return job_id.encode() if job_id else b""


class EncryptionCodec(PayloadCodec, WithSerializationContext):
    """The Temporal codec over a keyring. Decoding passes payloads that are not encrypted through, so
    histories recorded before encryption (tests/histories) still replay."""

    def __init__(self, keys: Keyring, job_id: str | None = None) -> None:
        self.keys = keys
        self.job_id = job_id

    def with_context(self, context: SerializationContext) -> EncryptionCodec:
        job_id = job_of_context(context)
        return self if job_id == self.job_id else EncryptionCodec(self.keys, job_id)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.keys.encrypt(p, self.job_id) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.keys.decrypt(p) if is_encrypted(p) else p for p in payloads]


def keyring(settings: Settings) -> Keyring:
    """CHRONOS_ENCRYPTION_KEYS, or a key generated once into the data dir (shared by the processes that
    share it, like the JWT key). Parsed once per process: one AESGCM object per key."""
    if settings.encryption_keys is not None:
        return _keyring_of_setting(settings.encryption_keys.get_secret_value())
    return _keyring_of_file(settings.data_dir.resolve() / "encryption_keys")


def new_key_entry(key_id: str) -> str:
    """A fresh `id:base64key` entry, as the setting and the key file hold them."""
    return f"{key_id}:{base64.b64encode(os.urandom(KEY_BYTES)).decode()}"


@functools.cache
def _keyring_of_setting(text: str) -> Keyring:
    return parse_keys(text, "CHRONOS_ENCRYPTION_KEYS")


@functools.cache
def _keyring_of_file(path: Path) -> Keyring:
    if not path.exists():
        write_secret(path, new_key_entry(f"local-{os.urandom(4).hex()}"))
    return parse_keys(path.read_text().strip(), str(path))


def parse_keys(text: str, source: str) -> Keyring:
    """`id:base64key` entries, comma-separated, newest first; `source` names the setting or file in errors."""
    ciphers: dict[str, AESGCM] = {}
    for number, entry in enumerate(text.split(","), start=1):
        key_id, _, encoded = entry.strip().partition(":")
        if not _KEY_ID.fullmatch(key_id) or not encoded:
            raise ValueError(f"{source}: entry {number} must be `id:base64key` with an id of [A-Za-z0-9._-]")
        if key_id in ciphers:
            raise ValueError(f"{source}: key id {key_id!r} appears twice")
        try:
            key = base64.b64decode(encoded.strip(), validate=True)
        except binascii.Error:
            raise ValueError(f"{source}: key {key_id!r} is not valid base64") from None
        if len(key) != KEY_BYTES:
            raise ValueError(f"{source}: key {key_id!r} has {len(key)} bytes; AES-256 needs {KEY_BYTES}")
        ciphers[key_id] = AESGCM(key)
    return Keyring(newest=next(iter(ciphers)), ciphers=ciphers)
