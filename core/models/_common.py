"""What every model family shares: ids, UTC times, typed (and sealed) JSON and enum columns, pages and
Temporal links."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, TypeAdapter
from pydantic import Field as Spec
from pydantic_core import from_json
from sqlalchemy import JSON, ColumnElement, DateTime, String, Text, TypeDecorator, cast, type_coerce
from sqlalchemy.engine import Dialect
from sqlmodel import AutoString, Field, SQLModel

from core.codec import Keyring
from core.payloads import has_userinfo, unicode_text, with_secrets

T = TypeVar("T")
U = TypeVar("U")
E = TypeVar("E", bound=StrEnum)

# Named constraints, so later migrations can drop them on SQLite too (batch mode needs the names).
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    """Short, URL-safe ids: they appear in paths, schedule ids and workflow ids."""
    return uuid.uuid4().hex[:16]


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC and always reads back an aware UTC datetime (SQLite forgets the zone otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# A JSON column's None as PostgreSQL hands it over as text: SQLAlchemy's JSON type stores None as JSON's
# null, not SQL's NULL.
JSON_NULL = "null"


class TypedJSON(TypeDecorator[Any]):
    """A JSON column that holds a pydantic type: written as its JSON, read back validated into the type.

    The one place where a stored definition is a dict; everywhere else it is the model. Writes accept the
    model or its JSON (Core statements may pass either).

    Reads select the column as its text (`column_expression`): PostgreSQL's driver then hands over the JSON
    as it is stored, and pydantic parses and validates it in one step, instead of psycopg's `json.loads`
    building dicts for pydantic to walk again (a fifth of a jobs page's CPU, docs/bench.md). SQLite's JSON
    type parses the text as before. Every column of this type holds an object (or null), so a `str` read
    back is always its JSON text."""

    impl = JSON
    cache_ok = True

    def __init__(self, annotation: Any) -> None:
        super().__init__()
        self.annotation = annotation
        self._adapter: TypeAdapter[Any] = TypeAdapter(annotation)

    def column_expression(self, colexpr: ColumnElement[Any]) -> ColumnElement[Any]:
        return type_coerce(cast(colexpr, Text), self)

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        return self._adapter.dump_python(self._adapter.validate_python(value), mode="json")

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None or value == JSON_NULL:
            return None
        return (
            self._adapter.validate_json(value)
            if isinstance(value, str)
            else self._adapter.validate_python(value)
        )


class SealedJSON(TypedJSON):
    """A TypedJSON column of actions or notify specs whose secrets (`with_secrets`) the database holds
    sealed (`Keyring.seal_text`; a URL with userinfo is sealed whole) with the key ring its engine carries.

    Reads open them before validating; a value that is not sealed (a row written before sealing) reads
    as it is."""

    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        data = super().process_bind_param(value, dialect)
        if data is None:
            return None
        keys = keyring_of(dialect)
        return with_secrets(
            data,
            header=keys.seal_text,
            url=lambda url: keys.seal_text(url) if has_userinfo(url) else url,
        )

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None or value == JSON_NULL:
            return None
        keys = keyring_of(dialect)
        data = from_json(value) if isinstance(value, str) else value
        return self._adapter.validate_python(with_secrets(data, keys.open_text, keys.open_text))


# The attribute of an engine's dialect that holds its key ring: the dialect is what SQLAlchemy hands the
# column types, so sealed columns find the keys of the engine that runs the statement.
_KEYRING = "chronos_keyring"


def attach_keyring(dialect: Dialect, keys: Keyring) -> None:
    setattr(dialect, _KEYRING, keys)


def keyring_of(dialect: Dialect) -> Keyring:
    keys: Keyring | None = getattr(dialect, _KEYRING, None)
    if keys is None:
        raise RuntimeError(
            "this engine has no key ring for the mirror's sealed columns: make it with core.db.make_engine "
            "(or give it one with core.models.attach_keyring)"
        )
    return keys


class OutsideText(TypeDecorator[str]):
    """Text that comes from outside Chronos (an excerpt of a target's answer, a mail server's reply, a
    failure message of the user's own workflow), stored with each NUL character and each lone surrogate
    as U+FFFD, the character the excerpt already shows for bytes it cannot decode. PostgreSQL refuses NUL
    in text, and neither database can encode a surrogate: a run whose target answered in binary could not
    be recorded, its write retried for ever. Requests never carry either (`api.deps.refuse_nul`, pydantic's
    strings), so only text from outside meets this."""

    impl = AutoString
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else unicode_text(value.replace("\x00", "\ufffd"))


class EnumText(TypeDecorator[E]):
    """A StrEnum stored as its value in a VARCHAR (no database enum type, so values can be added freely)."""

    impl = String
    cache_ok = True

    def __init__(self, enum: type[E], length: int = 16) -> None:
        super().__init__(length=length)
        self.enum = enum

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else self.enum(value).value

    def process_result_value(self, value: str | None, dialect: Dialect) -> E | None:
        return None if value is None else self.enum(value)


def when(*, index: bool = False, nullable: bool = True) -> Any:
    return Field(default=None, sa_type=UTCDateTime, index=index, nullable=nullable)


def created() -> Any:
    return Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


def json_of(annotation: Any, **field: Any) -> Any:
    """A field stored in a nullable JSON column as the given pydantic type (nullable as the schema has it)."""
    return Field(sa_type=TypedJSON(annotation), nullable=True, **field)


def sealed_json_of(annotation: Any, **field: Any) -> Any:
    """`json_of`, its secrets sealed in the database (`SealedJSON`)."""
    return Field(sa_type=SealedJSON(annotation), nullable=True, **field)


def enum_of(enum: type[StrEnum], length: int = 16, **field: Any) -> Any:
    return Field(sa_type=EnumText(enum, length), **field)


class Page(BaseModel, Generic[T]):
    """One page of a newest-first listing (`core.db.paginate`): by `cursor` (keyset, the fast way at any
    depth), or by `page` number for older clients, which also counts every row."""

    items: list[T]
    limit: int
    next_cursor: str | None = Spec(description="Pass as `cursor` for the next page; null on the last page")
    total: int | None = Spec(
        description="How many rows match in all: given for pages by number, null when paging by cursor"
    )
    page: int | None = Spec(description="The page number asked for; null when paging by cursor")

    def with_items(self, items: list[U]) -> Page[U]:
        """The same page, its rows shown as answers show them."""
        return Page(
            items=items, limit=self.limit, next_cursor=self.next_cursor, total=self.total, page=self.page
        )


class CursorPage(BaseModel, Generic[T]):
    """One page of a newest-first keyset listing (`core.db.keyset`)."""

    items: list[T]
    next_cursor: str | None = Spec(description="Pass as `cursor` for the next page; null on the last page")


class TemporalLinks(BaseModel):
    schedule_id: str | None = None
    workflow_id: str
    run_id: str | None = None
    ui_url: str
