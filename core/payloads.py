"""Types shared by the API, the workflows and the activities, so each field is defined once."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    HttpUrl,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from temporalio.api.common.v1 import Payload
from temporalio.common import RetryPolicy

# Names Chronos gives things in Temporal: the API, the workflows and the activities all use them.
RUN_WORKFLOW = "JobRunWorkflow"
RECONCILE_WORKFLOW = "ReconcileWorkflow"
FIXED_DELAY_WORKFLOW = "FixedDelayWorkflow"
SCHEDULE_PREFIX = "job-"
# The workflow layout a run follows, chosen by whoever starts it (core/job_schedules.py `run_input`) and
# carried in its input: 0 (runs from before) reads the patches in its history; LOCAL_FIRST records itself
# from its attempts and tries an at-least-once action first as a local activity. A number in the input,
# not a patch: a patch costs every run two history events (its marker and a search attribute upsert).
LOCAL_FIRST = 1


def schedule_id(job_id: str) -> str:
    """The Temporal Schedule of a timed job."""
    return f"{SCHEDULE_PREFIX}{job_id}"


def job_of_workflow(workflow_id: str) -> str | None:
    """The job a schedule's or a run's workflow id names (`job-<id>`, `job-<id>-…`); None for others."""
    if not workflow_id.startswith(SCHEDULE_PREFIX):
        return None
    job_id = workflow_id.removeprefix(SCHEDULE_PREFIX).split("-", 1)[0]
    return job_id or None


class Guarantee(StrEnum):
    """How often an action may run for one run: retried until it succeeds, or tried once."""

    AT_LEAST_ONCE = "at_least_once"
    AT_MOST_ONCE = "at_most_once"


class Trigger(StrEnum):
    """What started a run: its schedule, an immediate job's creation, a user, a dead-letter replay, or a
    user's backfill of past fire times (through the schedule: the mirror tells it by its ranges)."""

    SCHEDULE = "schedule"
    IMMEDIATE = "immediate"
    MANUAL = "manual"
    REPLAY = "replay"
    BACKFILL = "backfill"


class RunOutcome(StrEnum):
    """How a run ended (the end states of RunStatus)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


# Bounds on what a user's action may carry, so it cannot be made to fail later or to cost without limit.
MAX_HEADERS = 50
MAX_HEADER_BYTES = 8 * 1024
MAX_BODY_DEPTH = 32
# Header names are RFC 9110 tokens; values are visible ASCII, space and tab (no CR/LF/NUL smuggling, and
# nothing the HTTP client would refuse to encode when the run comes).
HeaderName = Annotated[str, StringConstraints(pattern=r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$", max_length=256)]
HeaderValue = Annotated[str, StringConstraints(pattern=r"^[\t\x20-\x7e]*$")]
# A subject line without CR/LF/NUL, so it cannot add mail headers.
OneLine = Annotated[str, StringConstraints(pattern=r"^[^\r\n\x00]*$")]
# The longest retry interval: a policy must not wait years between attempts.
MAX_INTERVAL_SECONDS = 24 * 3600


class HttpAction(BaseModel):
    # Unknown fields are refused: a misspelt one (`methd`) would otherwise be dropped without a word.
    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["http"] = "http"
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "POST"
    url: HttpUrl
    headers: dict[HeaderName, HeaderValue] = Field(default_factory=dict, max_length=MAX_HEADERS)
    body: Any = None
    timeout_seconds: float = Field(default=30, gt=0, le=3600, allow_inf_nan=False)

    @field_validator("headers")
    @classmethod
    def _headers_size(cls, headers: dict[str, str]) -> dict[str, str]:
        size = sum(len(name) + len(value) + 4 for name, value in headers.items())  # "name: value\r\n"
        if size > MAX_HEADER_BYTES:
            raise PydanticCustomError(
                "headers_size", "the headers total over {limit} bytes", {"limit": MAX_HEADER_BYTES}
            )
        return headers

    @field_validator("body")
    @classmethod
    def _body_json(cls, body: Any) -> Any:
        return _json_value(body, "body")


def _json_value(value: Any, what: str) -> Any:
    """A user's JSON (an HTTP body, a workflow input) as given, if it can be kept and sent as given: nested
    at most MAX_BODY_DEPTH deep, its numbers finite (`NaN`, `Infinity` and `1e400`, which Python's JSON
    parser takes, are no JSON, and were stored as null), its text Unicode (a lone surrogate such as
    `"\\ud800"` cannot be encoded: it was a 500). One walk, without recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > MAX_BODY_DEPTH:
                raise PydanticCustomError(
                    "json_depth", f"the {what} nests deeper than {{limit}} levels", {"limit": MAX_BODY_DEPTH}
                )
            if isinstance(item, dict):
                stack.extend((key, depth) for key in item)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
        elif isinstance(item, float) and not math.isfinite(item):
            raise PydanticCustomError(
                "json_number", f"the {what} holds NaN, Infinity or a number past 1.8e308: JSON's are finite"
            )
        elif isinstance(item, str) and (lone := _SURROGATE.search(item)):
            raise PydanticCustomError(
                "json_text",
                f"the {what} holds a lone surrogate (U+{ord(lone.group()):04X}), which is no Unicode text",
            )
    return value


_SURROGATE = re.compile("[\ud800-\udfff]")  # a pair in JSON's escapes is one character once parsed


# Header values shown in full in answers and dead letters, and stored in clear; every other value may be a
# secret.
PLAIN_HEADERS = frozenset({"accept", "accept-language", "content-type", "user-agent"})


def masked_action(action: HttpAction | EmailAction | WorkflowAction) -> dict[str, Any]:
    """The action as answers and dead letters show it: header values masked but their last 4
    characters (for long ones), so users can tell which key is set without it being readable, and the
    URL's userinfo masked (`masked_url`)."""
    return with_secrets(action.model_dump(mode="json"), header=_mask, url=masked_url)


def masked_notify(notify: NotifySpec) -> dict[str, Any]:
    """Who is notified, as answers and the audit trail show it: the webhook URL's userinfo masked."""
    return with_secrets(notify.model_dump(mode="json"), header=_mask, url=masked_url)


M = TypeVar("M", bound=BaseModel)


def with_secrets(
    data: dict[str, Any], header: Callable[[str], str], url: Callable[[str], str]
) -> dict[str, Any]:
    """An action's or a NotifySpec's JSON with its secrets changed: `header` changes an HTTP action's
    header values but the plain ones, `url` each URL that may carry userinfo (the action's, the
    webhook's). The one rule of what is secret: answers mask with it, the mirror seals and opens with it."""
    data = dict(data)
    if data.get("type") == "http":
        headers: dict[str, str] = data.get("headers") or {}
        data["headers"] = {
            name: value if name.lower() in PLAIN_HEADERS else header(value) for name, value in headers.items()
        }
        data["url"] = url(data["url"])
    if data.get("webhook_url") is not None:
        data["webhook_url"] = url(data["webhook_url"])
    return data


def unmasked(sent: M, stored: M) -> M:
    """`sent` (an action or a NotifySpec) with each secret that is still the mask answers show of the
    `stored` one's set back to the stored secret: a header value left as its mask, a URL's userinfo left
    as `****`. So a form that shows them masked, sent back as it is, keeps the secrets it could not show,
    and a value typed over a mask replaces it."""
    if type(sent) is not type(stored):
        return sent
    data, kept = sent.model_dump(mode="json"), stored.model_dump(mode="json")
    shown = with_secrets(kept, header=_mask, url=masked_url)
    for key in ("url", "webhook_url"):
        if data.get(key) is not None and kept.get(key) is not None and has_userinfo(kept[key]):
            data[key] = _kept_userinfo(data[key], kept[key])
    if isinstance(data.get("headers"), dict):
        data["headers"] = {
            name: kept["headers"][name] if shown["headers"].get(name) == value else value
            for name, value in data["headers"].items()
        }
    return type(sent).model_validate(data)


def _kept_userinfo(sent: str, stored: str) -> str:
    """`sent` with its userinfo, if still the mask, set back to the stored URL's (its host or path may
    have changed)."""
    parts = urlsplit(sent)
    if not parts.netloc.startswith("****@"):
        return sent
    userinfo = urlsplit(stored).netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{parts.netloc.removeprefix('****@')}"))


def has_userinfo(url: HttpUrl | str) -> bool:
    """Whether the URL carries a credential (`user:password@`, or a token as the user name)."""
    return "@" in urlsplit(str(url)).netloc


def masked_url(url: HttpUrl | str) -> str:
    """The URL as answers and run logs show it: its userinfo is a credential, so all of it becomes `****`."""
    text = str(url)
    if not has_userinfo(text):
        return text
    parts = urlsplit(text)
    return urlunsplit(parts._replace(netloc="****@" + parts.netloc.rpartition("@")[2]))


def _mask(value: str) -> str:
    return "****" + value[-4:] if len(value) >= 16 else "****"


class EmailAction(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["email"] = "email"
    to: list[EmailStr] = Field(min_length=1, max_length=50)
    cc: list[EmailStr] = Field(default_factory=list, max_length=50)
    subject: OneLine = Field(min_length=1, max_length=998)
    body: str = Field(max_length=1_000_000)
    html: str | None = Field(default=None, max_length=1_000_000)


# A Temporal workflow type or task queue name: printable, no control characters.
TemporalName = Annotated[str, StringConstraints(pattern=r"^[^\x00-\x1f\x7f]+$", min_length=1, max_length=200)]
# The longest a child workflow may run: a day, as the longest retry interval.
MAX_CHILD_SECONDS = 24 * 3600
# The most of a child's result (its JSON) a run keeps; a larger result is not kept.
MAX_OUTPUT_BYTES = 64 * 1024


class WorkflowAction(BaseModel):
    """Start the user's own workflow as a child of the run, on a task queue an operator allowed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["workflow"] = "workflow"
    workflow_type: TemporalName
    task_queue: TemporalName
    input: Any = None
    timeout_seconds: float = Field(default=3600, gt=0, le=MAX_CHILD_SECONDS, allow_inf_nan=False)

    @field_validator("input")
    @classmethod
    def _input_json(cls, value: Any) -> Any:
        return _json_value(value, "input")


Action = Annotated[HttpAction | EmailAction | WorkflowAction, Field(discriminator="type")]


class NotifySpec(BaseModel):
    """Who hears about a run's end: emails on failure or success, and a signed JSON webhook."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    on_failure: list[EmailStr] = Field(default_factory=list, max_length=50)
    on_success: list[EmailStr] = Field(default_factory=list, max_length=50)
    webhook_url: HttpUrl | None = None
    # A fire that has not started within CHRONOS_MISSED_GRACE_SECONDS: `run.missed` to on_failure and the
    # webhook (sent by reconciliation, activities/reconcile.py).
    on_missed: bool = Field(default=False, exclude_if=lambda value: not value)


class RetrySpec(BaseModel):
    """A job's retry policy as users write it; `to_temporal` is the one mapping onto Temporal's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_attempts: int = Field(default=3, ge=1, le=100)
    backoff: Literal["exponential", "fixed"] = "exponential"
    initial_interval_seconds: float = Field(default=1, gt=0, le=MAX_INTERVAL_SECONDS, allow_inf_nan=False)
    max_interval_seconds: float = Field(default=300, gt=0, le=MAX_INTERVAL_SECONDS, allow_inf_nan=False)

    @model_validator(mode="after")
    def _interval_order(self) -> RetrySpec:
        if self.max_interval_seconds < self.initial_interval_seconds:
            raise ValueError("max_interval_seconds must not be below initial_interval_seconds")
        return self

    def attempt_limit(self, guarantee: Guarantee) -> int:
        return 1 if guarantee == Guarantee.AT_MOST_ONCE else self.max_attempts

    def to_temporal(self, guarantee: Guarantee, attempts_made: int = 0) -> RetryPolicy:
        """The policy for the attempts still to come: `attempts_made` ran before (a local first attempt, or
        attempts a pause interrupted), so the backoff goes on from where they left it."""
        coefficient = 2.0 if self.backoff == "exponential" else 1.0
        initial = self.initial_interval_seconds * coefficient**attempts_made
        return RetryPolicy(
            initial_interval=timedelta(seconds=min(initial, self.max_interval_seconds)),
            backoff_coefficient=coefficient,
            maximum_interval=timedelta(seconds=self.max_interval_seconds),
            maximum_attempts=self.attempt_limit(guarantee) - attempts_made,
            non_retryable_error_types=list(NON_RETRYABLE),
        )


def retry_delay(policy: RetryPolicy, attempt: int) -> timedelta:
    """The wait after failed attempt `attempt` before the next, as Temporal's retry policy computes it:
    the one formula for activity retries' log lines and for the workflow action's child attempts."""
    delay = policy.initial_interval * (policy.backoff_coefficient ** (attempt - 1))
    return min(delay, policy.maximum_interval) if policy.maximum_interval else delay


class ErrorType(StrEnum):
    """The `type` of every ApplicationError an activity raises: retry policies name the ones no further
    attempt can fix, so raising and retrying read the same names."""

    HTTP_CLIENT_ERROR = "HttpClientError"
    HTTP_SERVER_ERROR = "HttpServerError"
    HTTP_TIMEOUT = "HttpTimeout"
    HTTP_NETWORK_ERROR = "HttpNetworkError"
    TARGET_REFUSED = "TargetRefused"
    EMAIL_REJECTED = "EmailRejected"
    EMAIL_ERROR = "EmailError"
    WEBHOOK_REJECTED = "WebhookRejected"
    WEBHOOK_ERROR = "WebhookError"
    # No activity raises it; the action retry policies still name it, so they stay as runs recorded them.
    INVALID_ACTION = "InvalidAction"


# Error types the action activities raise that no further attempt can fix.
NON_RETRYABLE = (
    ErrorType.HTTP_CLIENT_ERROR,
    ErrorType.INVALID_ACTION,
    ErrorType.TARGET_REFUSED,
    ErrorType.EMAIL_REJECTED,
)


class FixedCron(BaseModel):
    """A fixed-time cron schedule's expression and zone: a fire at a time a fall-back repeats (or one
    Temporal moved) is skipped, so each local fire time runs once (the cron convention, docs/cron.md)."""

    model_config = ConfigDict(frozen=True)

    cron: str
    timezone: str
    # core.cron.Dialect (payloads import nothing of core): how `cron` reads; None: by its field count.
    dialect: Literal["posix", "spring", "quartz"] | None = None
    # core.cron.DstRule: the schedule's `dst`, the cron convention by default (and in older histories).
    gap: Literal["shift", "skip"] = "shift"
    repeat: Literal["first", "second", "both"] = "first"


class RunInput(BaseModel):
    """Everything one run needs: the schedule carries it, so a run reads nothing from the mirror."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    owner_id: str
    action: Action
    retry: RetrySpec = RetrySpec()
    guarantee: Guarantee = Guarantee.AT_LEAST_ONCE
    trigger: Trigger = Trigger.SCHEDULE
    job_name: str = ""
    notify: NotifySpec = NotifySpec()
    fixed_cron: FixedCron | None = None
    layout: int = 0


class FixedDelayInput(BaseModel):
    """A fixed-delay interval job as its FixedDelayWorkflow (`job-<id>`) runs it: each run starts
    `every_seconds` (plus up to `jitter_seconds`) after the previous one ends, inside the window. A PATCH
    sends a new one as the `update` signal; `paused` and `last_end` carry the loop's own state across
    continue-as-new (an update's are ignored)."""

    model_config = ConfigDict(frozen=True)

    run: RunInput
    every_seconds: int
    jitter_seconds: int = 0
    start_at: datetime | None = None
    end_at: datetime | None = None
    paused: bool = False
    # When the previous run ended; None: no run yet, the first starts at once (or at start_at).
    last_end: datetime | None = None


class HttpCall(BaseModel):
    run_id: str
    action: HttpAction
    # Attempts made before a pause interrupted the retries: numbering in the mirror continues after them.
    attempts_made: int = 0
    # Runs since the attempt records its run: the run's start as the workflow saw it (None: earlier runs,
    # whose workflow writes the start and the end itself).
    started: RunStarted | None = None
    # Earlier attempts that could not write themselves (the database was away): written with this one.
    carried: list[AttemptRecord] = []


class HttpOutcome(BaseModel):
    status_code: int
    duration_ms: int
    attempt: int
    body_excerpt: str
    # What the attempt could not write into the mirror (the database was away): the run writes it later.
    unrecorded: RunRecord | None = None


class EmailSend(BaseModel):
    run_id: str
    action: EmailAction
    attempts_made: int = 0
    started: RunStarted | None = None
    carried: list[AttemptRecord] = []


class EmailOutcome(BaseModel):
    attempt: int
    delivered_to: str
    unrecorded: RunRecord | None = None


class RunNotice(BaseModel):
    """What a notification says about a run's end: the webhook's JSON body and the email's facts."""

    event: Literal["run.succeeded", "run.failed", "run.missed"]
    job_id: str
    job_name: str
    run_id: str
    owner_id: str
    status: str
    attempts: int
    http_status: int | None = None
    error: str | None = None
    finished_at: datetime


class EmailNotice(BaseModel):
    notice: RunNotice
    to: list[str]


class WebhookNotice(BaseModel):
    notice: RunNotice
    url: str


class RunResult(BaseModel):
    status: RunOutcome
    attempts: int
    http_status: int | None = None
    error: str | None = None
    # A workflow action's child result (its JSON, at most MAX_OUTPUT_BYTES); None for the other actions.
    output: Any = None


class ChildAttempt(BaseModel):
    """One attempt of a workflow action: the child workflow it starts, for its Attempt row and log."""

    run_id: str
    number: int
    child_id: str
    workflow_type: str
    task_queue: str


class ChildAttemptEnd(BaseModel):
    """How a child attempt ended, and what the run does next (its log line says it)."""

    run_id: str
    number: int
    child_id: str
    succeeded: bool
    duration_ms: int
    error: str | None = None
    then: str | None = None


class RunStarted(BaseModel):
    run_id: str
    temporal_run_id: str
    job_id: str
    owner_id: str
    trigger: Trigger
    scheduled_at: datetime
    started_at: datetime
    fixed_cron: FixedCron | None = None


class RunFinished(BaseModel):
    run_id: str
    finished_at: datetime
    result: RunResult
    # The action that ran: a failed run keeps it (secrets masked) in its dead letter.
    action: Action | None = None


class RecordLine(BaseModel):
    """A run log line carried in a payload until the mirror takes it, with the time it happened."""

    key: str
    level: str
    message: str
    ts: datetime


class AttemptRecord(BaseModel):
    """One attempt with its true times: written by the attempt itself, or later by its run when the
    database was away (`finished_at` None: still running, or its outcome never came)."""

    number: int
    started_at: datetime
    status: str
    finished_at: datetime | None = None
    duration_ms: int | None = None
    http_status: int | None = None
    error: str | None = None
    lines: list[RecordLine] = []


class CarriedAttempts(BaseModel):
    """Attempts an activity could not record, handed to its next attempt in its heartbeat details."""

    attempts: list[AttemptRecord]


class RunRecord(BaseModel):
    """What a run has to write into the mirror in one transaction: its start, its attempts, maybe its end.
    Every part is idempotent, so a record written twice (a retried write, a late one) lands once."""

    started: RunStarted | None = None
    attempts: list[AttemptRecord] = []
    finished: RunFinished | None = None

    def run_id(self) -> str:
        if self.started is not None:
            return self.started.run_id
        if self.finished is not None:
            return self.finished.run_id
        raise ValueError("a run record names its run in its start or its end")


# Younger things may be mid-creation (a job's schedule exists before its row commits; a run's row before
# its workflow starts): reconciliation leaves them to the next pass.
GRACE = timedelta(minutes=3)


class Shard(BaseModel):
    """Jobs whose id is in [low, high) (high None: no upper end), and the schedules named after them."""

    low: str
    high: str | None = None
    grace_seconds: float = GRACE.total_seconds()

    def holds(self, sid: str) -> bool:
        """Whether a listed schedule is a job's and in the shard: what a listing returns is checked here
        too, whatever its visibility query kept to."""
        job_id = sid.removeprefix(SCHEDULE_PREFIX)
        return (
            sid.startswith(SCHEDULE_PREFIX)
            and job_id >= self.low
            and (self.high is None or job_id < self.high)
        )


# Job ids are hex: sixteen shards split them evenly, and the first and last are open-ended so that
# a schedule with any other name still falls in one.
_BOUNDS = "123456789abcdef"
SHARDS = [Shard(low=low, high=high) for low, high in zip(["", *_BOUNDS], [*_BOUNDS, None], strict=True)]


class RunsPage(BaseModel):
    """Open runs after this run id, in id order."""

    after: str | None = None
    grace_seconds: float = GRACE.total_seconds()


class RunsPass(BaseModel):
    fixes: dict[str, int]
    next_page: RunsPage | None


class FiresPass(BaseModel):
    """One shard's check for fires that never ran: the fixes counted, and the `run.missed` notifications
    the workflow sends (on the notifications' own retry policy)."""

    fixes: dict[str, int]
    emails: list[EmailNotice] = []
    webhooks: list[WebhookNotice] = []


class ReconcileInput(BaseModel):
    """The schedule starts passes with the defaults; an operator's manual pass may shorten the grace."""

    grace_seconds: float = GRACE.total_seconds()


# These name models defined after them, so pydantic leaves them incomplete at class creation; an incomplete
# model's schema is rebuilt for every new TypeAdapter, and each workflow run's payload converter makes its
# own: 0.3 ms of worker CPU per run to decode an HttpOutcome (docs/bench.md). Completed once, here.
for _model in (HttpCall, HttpOutcome, EmailSend, EmailOutcome):
    _model.model_rebuild()


def payload_encoding(payload: Payload) -> str:
    """What a payload says it holds (`json/plain`, `binary/plain`, `json/protobuf`…), for notes."""
    return payload.metadata.get("encoding", b"").decode(errors="replace") or "no encoding"


def unicode_text(text: str) -> str:
    """Text from outside as Unicode that can be encoded: each lone surrogate (what `surrogateescape` makes
    of a byte that is not UTF-8, as aiosmtplib does with a mail server's reply) becomes U+FFFD. Neither
    Temporal's protobufs nor either database can hold one."""
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)
