"""The payload codec (keys, rotation, the job id it binds) and the codec endpoint the Temporal UI calls."""

from __future__ import annotations

import base64
import stat
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.client import Client
from temporalio.converter import WorkflowSerializationContext

from core.codec import JOB_ID, KEY_ID, EncryptionCodec, is_encrypted, keyring, new_key_entry, parse_keys
from core.config import Settings
from core.payloads import HttpAction, RunInput
from core.temporal import data_converter
from tests.api_client import ApiClient, AuthedClient, expect
from tests.conftest import sqlite_only
from tests.http_target import HttpTarget
from tests.test_jobs_api import create, finished_runs, http_job, path

PLAIN = Payload(metadata={"encoding": b"json/plain"}, data=b'{"secret":"hunter2"}')


def codec(text: str, job_id: str | None = None) -> EncryptionCodec:
    return EncryptionCodec(parse_keys(text, "test"), job_id)


async def test_rotation_old_keys_decode_and_the_newest_encodes() -> None:
    old, new = new_key_entry("old"), new_key_entry("new")
    spec = RunInput(job_id="j1", owner_id="u1", action=HttpAction(url="https://example.org/"))
    before = data_converter(Settings(encryption_keys=old))
    after = data_converter(Settings(encryption_keys=f"{new},{old}"))
    [sealed] = await before.encode([spec])
    assert sealed.metadata[KEY_ID] == b"old" and is_encrypted(sealed)
    assert await after.decode([sealed], [RunInput]) == [spec]
    [resealed] = await after.encode([spec])
    assert resealed.metadata[KEY_ID] == b"new"
    assert await after.decode([resealed], [RunInput]) == [spec]
    with pytest.raises(ValueError, match="'old'"):  # a retired key no longer reads what it wrote
        await data_converter(Settings(encryption_keys=new)).decode([sealed], [RunInput])


async def test_payloads_not_encrypted_pass_through_decode() -> None:
    """Histories recorded before encryption hold plain payloads: they still decode (and replay)."""
    assert await codec(new_key_entry("k")).decode([PLAIN]) == [PLAIN]


async def test_each_encryption_is_fresh_and_hides_the_data() -> None:
    keys = codec(new_key_entry("k"))
    first, second = await keys.encode([PLAIN, PLAIN])
    assert first.data != second.data
    assert b"hunter2" not in first.SerializeToString()
    assert await keys.decode([first, second]) == [PLAIN, PLAIN]


@pytest.mark.parametrize(
    ("workflow_id", "job_id"),
    [
        ("job-0123456789abcdef", "0123456789abcdef"),  # a schedule's action
        ("job-0123456789abcdef-manual-1a2b3c4d", "0123456789abcdef"),  # a run the API starts
        ("job-0123456789abcdef-2030-01-01T00:00:00Z", "0123456789abcdef"),  # a run the schedule starts
        ("chronos-reconcile", None),
    ],
)
async def test_the_workflow_context_names_the_job_in_clear_metadata(
    workflow_id: str, job_id: str | None
) -> None:
    keys = codec(new_key_entry("k")).with_context(WorkflowSerializationContext("default", workflow_id))
    [sealed] = await keys.encode([PLAIN])
    assert sealed.metadata.get(JOB_ID) == (job_id.encode() if job_id else None)


async def test_the_data_converter_keeps_one_converter_per_job() -> None:
    """A job's converter is built once and reused for its every run and activity; each still seals its
    payloads under its own job's name, and the converter without a job is the original."""
    converter = data_converter(Settings(encryption_keys=new_key_entry("k")))
    run = WorkflowSerializationContext("default", "job-aaaa-manual-1")
    other_run = WorkflowSerializationContext("default", "job-aaaa-manual-2")
    other_job = WorkflowSerializationContext("default", "job-bbbb-manual-1")
    first = converter.with_context(run)
    assert converter.with_context(other_run) is first
    assert converter.with_context(other_job) is not first
    assert converter.with_context(WorkflowSerializationContext("default", "chronos-reconcile")) is converter
    spec = RunInput(job_id="aaaa", owner_id="u1", action=HttpAction(url="https://example.org/"))
    for ctx, job in ((run, b"aaaa"), (other_job, b"bbbb")):
        [sealed] = await converter.with_context(ctx).encode([spec])
        assert sealed.metadata[JOB_ID] == job
        assert await converter.decode([sealed], [RunInput]) == [spec]


async def test_an_edited_job_id_breaks_decryption() -> None:
    """The job id is authenticated data: moving a payload to another job's name does not reveal it."""
    keys = codec(new_key_entry("k")).with_context(WorkflowSerializationContext("default", "job-aaaa"))
    [sealed] = await keys.encode([PLAIN])
    sealed.metadata[JOB_ID] = b"bbbb"
    with pytest.raises(ValueError, match="does not authenticate"):
        await keys.decode([sealed])


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "entry 1 must be `id:base64key`"),
        ("k1", "entry 1 must be `id:base64key`"),
        ("k 1:AAAA", "entry 1 must be"),
        ("k1:not base64!", "'k1' is not valid base64"),
        ("k1:AAAA", "'k1' has 3 bytes; AES-256 needs 32"),
        pytest.param(f"{new_key_entry('k1')},{new_key_entry('k1')}", "'k1' appears twice", id="twice"),
    ],
)
def test_a_bad_key_setting_names_the_entry(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=f"^CHRONOS_ENCRYPTION_KEYS: .*{words}"):
        keyring(Settings(encryption_keys=text))


async def test_without_the_setting_a_key_is_generated_once_into_the_data_dir(tmp_path: Path) -> None:
    keys = keyring(Settings(data_dir=tmp_path, encryption_keys=None))
    stored = tmp_path / "encryption_keys"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    [sealed] = await EncryptionCodec(keys).encode([PLAIN])
    # Another process sharing the data dir reads the same key; the file's line is a valid setting.
    again = parse_keys(stored.read_text(), "CHRONOS_ENCRYPTION_KEYS")
    assert again.newest == keys.newest
    assert await EncryptionCodec(again).decode([sealed]) == [PLAIN]


def _data(payload: dict[str, Any]) -> bytes:
    return base64.b64decode(payload.get("data", ""))


def wire(payloads: list[Payload]) -> dict[str, Any]:
    """Payloads in protobuf JSON, as the Temporal UI and CLI send them."""
    return MessageToDict(Payloads(payloads=payloads))


async def run_input_payload(temporal_client: Client, user: AuthedClient, target: HttpTarget) -> Payload:
    """The encrypted input of a run of a new job of `user`, as Temporal stores it."""
    body = http_job(target.url(path()), {"type": "immediate"})
    body["action"]["headers"] = {"X-Api-Key": "codec-endpoint-secret"}
    job = await create(user, body)
    [run] = await finished_runs(user, job["id"], 1)
    history = await temporal_client.get_workflow_handle(run["id"]).fetch_history()
    [payload] = history.events[0].workflow_execution_started_event_attributes.input.payloads
    assert payload.metadata[JOB_ID] == job["id"].encode()
    return payload


async def test_the_codec_endpoint_decodes_only_what_the_caller_may_see(
    api: ApiClient, temporal_client: Client, target: HttpTarget
) -> None:
    alice, bob, admin = await api.authed_user(), await api.authed_user(), await api.authed_admin()
    sealed = await run_input_payload(temporal_client, alice, target)
    [orphan] = await temporal_client.data_converter.encode(["no job"])  # no job, as the reconcile workflow's
    body = wire([sealed, orphan])

    mine = expect(await alice.post("/codec/decode", json=body), 200)["payloads"]
    assert "codec-endpoint-secret" in _data(mine[0]).decode()
    assert mine[1] == body["payloads"][1], "a payload of no job is for admins only"

    theirs = expect(await bob.post("/codec/decode", json=body), 200)
    assert theirs == body, "another user's payloads come back still encrypted"

    everything = expect(await admin.post("/codec/decode", json=body), 200)["payloads"]
    assert "codec-endpoint-secret" in _data(everything[0]).decode()
    assert _data(everything[1]) == b'"no job"'

    problem = expect(await api.post("/codec/decode", json=body), 401)
    assert "bearer token" in problem["detail"]

    # A deleted job's payloads are for admins only, as its runs are.
    expect(await alice.delete(f"/jobs/{sealed.metadata[JOB_ID].decode()}"), 204)
    assert expect(await alice.post("/codec/decode", json=body), 200) == body
    assert expect(await admin.post("/codec/decode", json=body), 200)["payloads"] == everything


async def test_a_payload_naming_a_job_no_job_can_have_comes_back_unchanged(api: ApiClient) -> None:
    """The metadata is the caller's: a job id that is not UTF-8 was a 500, and one holding NUL a 500 on
    PostgreSQL (its lookup). Both name no job, and such a payload comes back as it came, to anyone."""
    alice, admin = await api.authed_user(), await api.authed_admin()
    sealed = [
        Payload(metadata={"encoding": b"binary/encrypted", JOB_ID: job_id}, data=b"x" * 40)
        for job_id in (b"\xff\xfe", b"a\x00b")
    ]
    for caller in (alice, admin):
        assert expect(await caller.post("/codec/decode", json=wire(sealed)), 200) == wire(sealed)


async def test_the_codec_endpoint_encodes_for_admins_eyes(api: ApiClient) -> None:
    alice, admin = await api.authed_user(), await api.authed_admin()
    plain = wire([PLAIN])
    [sealed] = expect(await alice.post("/codec/encode", json=plain), 200)["payloads"]
    assert sealed["metadata"]["encoding"] == "YmluYXJ5L2VuY3J5cHRlZA=="  # binary/encrypted
    assert JOB_ID not in sealed["metadata"]
    assert expect(await alice.post("/codec/decode", json={"payloads": [sealed]}), 200)["payloads"] == [sealed]
    assert expect(await admin.post("/codec/decode", json={"payloads": [sealed]}), 200) == plain


@sqlite_only
async def test_the_codec_endpoint_names_a_bad_field(api: ApiClient) -> None:
    alice = await api.authed_user()
    problem = expect(await alice.post("/codec/decode", json={"payloads": [{"data": "%%%"}]}), 422)
    assert problem["errors"][0]["loc"] == ["body", "payloads", 0, "data"]


@sqlite_only
async def test_cors_admits_the_temporal_ui_on_the_codec_routes_only(api: ApiClient) -> None:
    origin = api.settings.temporal_ui_url.rstrip("/")
    preflight = {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,x-namespace",
    }
    codec = await api.request("OPTIONS", "/codec/decode", headers=preflight)
    assert codec.status_code == 200
    assert codec.headers["access-control-allow-origin"] == origin
    assert codec.headers["access-control-allow-credentials"] == "true"
    assert "authorization" in codec.headers["access-control-allow-headers"].lower()
    jobs = await api.request("OPTIONS", "/jobs", headers=preflight)
    assert "access-control-allow-origin" not in jobs.headers
    elsewhere = await api.request(
        "OPTIONS", "/codec/decode", headers={**preflight, "Origin": "https://evil.test"}
    )
    assert "access-control-allow-origin" not in elsewhere.headers
