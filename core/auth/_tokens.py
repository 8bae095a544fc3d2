"""Access tokens: HS256 JWTs issued and verified with one signing key, from the settings or the data dir."""

from __future__ import annotations

import functools
import secrets
import time
from pathlib import Path

from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    ClaimError,
    ExpiredTokenError,
    JoseError,
    MissingAlgorithmError,
    UnsupportedAlgorithmError,
)
from joserfc.jwk import OctKey

from core.auth._principal import ROLE_SCOPES, AccessToken, Principal
from core.config import Settings
from core.errors import Unauthorized
from core.keyfiles import write_secret
from core.models import Role, User

# HS256 and nothing else: naming the algorithms on decode is what refuses `alg: none` and key confusion.
ALGORITHMS = ["HS256"]
# Tolerated clock skew between the API processes that issue and check tokens.
LEEWAY_SECONDS = 30


def issue_access_token(settings: Settings, user: User, scopes: frozenset[str]) -> str:
    now = int(time.time())
    claims = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": user.id,
        "email": user.email,
        "role": str(user.role),
        "scope": " ".join(sorted(scopes)),
        "iat": now,
        "exp": now + settings.access_token_ttl_seconds,
        "jti": secrets.token_urlsafe(16),
    }
    return jwt.encode({"alg": "HS256"}, claims, signing_key(settings), algorithms=ALGORITHMS)


def decode_access_token(settings: Settings, token: str) -> Principal:
    """The caller of a valid access token; Unauthorized, with the reason, for any other token."""
    principal = _verified(signing_key(settings).raw_value, settings.jwt_issuer, settings.jwt_audience, token)
    # Of the claims checked once, only the expiry changes its verdict with time.
    if principal.token is None or principal.token.expires_at <= time.time() - LEEWAY_SECONDS:
        raise Unauthorized("the access token has expired")
    return principal


# A token that verified once is not verified again: the signature and the claims' checks cost about 0.3 ms
# of the API's CPU on every request (docs/bench.md). A rejected token raises, which is never cached.
@functools.lru_cache(maxsize=4096)
def _verified(secret: bytes, issuer: str, audience: str, token: str) -> Principal:
    try:
        claims = jwt.decode(token, OctKey.import_key(secret), algorithms=ALGORITHMS).claims
        _claims_registry(issuer, audience).validate(claims)
    except ExpiredTokenError:
        raise Unauthorized("the access token has expired") from None
    except BadSignatureError:
        raise Unauthorized("the access token's signature does not verify") from None
    except (UnsupportedAlgorithmError, MissingAlgorithmError):
        raise Unauthorized(f"the access token must be signed with {' or '.join(ALGORITHMS)}") from None
    except ClaimError as exc:
        raise Unauthorized(f"the access token's {exc.claim!r} claim is missing or wrong") from None
    except (JoseError, ValueError, TypeError, AttributeError, KeyError):  # a header that is no JSON object
        raise Unauthorized("the access token is malformed") from None
    return Principal(
        id=claims["sub"],
        email=claims["email"],
        role=Role(claims["role"]),
        scopes=frozenset(claims["scope"].split()),
        token=AccessToken(jti=claims["jti"], issued_at=int(claims["iat"]), expires_at=int(claims["exp"])),
    )


def _claims_registry(issuer: str, audience: str) -> jwt.JWTClaimsRegistry:
    return jwt.JWTClaimsRegistry(
        leeway=LEEWAY_SECONDS,
        iss={"essential": True, "value": issuer},
        aud={"essential": True, "value": audience},
        sub={"essential": True},
        email={"essential": True},
        role={"essential": True, "values": [str(role) for role in ROLE_SCOPES]},
        scope={"essential": True},
        iat={"essential": True},
        exp={"essential": True},
        jti={"essential": True},
    )


def signing_key(settings: Settings) -> OctKey:
    """CHRONOS_JWT_SECRET, or a secret generated once into the data dir so a restart keeps tokens valid."""
    if settings.jwt_secret:
        return _key_of_secret(settings.jwt_secret)
    return _key_of_file(settings.data_dir.resolve() / "jwt_secret")


@functools.cache
def _key_of_secret(secret: str) -> OctKey:
    return OctKey.import_key(secret)


@functools.cache
def _key_of_file(path: Path) -> OctKey:
    if not path.exists():
        write_secret(path)
    return OctKey.import_key(path.read_text().strip())
