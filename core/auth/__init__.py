"""Users, passwords and tokens: the auth rules that the API and the `chronos users` command share.

Import from here: the private modules split JWTs (`_tokens`), password hashing (`_passwords`), accounts and
grants (`_grants`), the caller (`_principal`) and the tokens that stop working early (`_revocation`).
"""

from core.auth._grants import (
    authenticate,
    create_user,
    grant,
    normalize_email,
    password_grant,
    refresh_grant,
    register,
    revoke_refresh_token,
)
from core.auth._passwords import hash_password, needs_rehash
from core.auth._principal import ROLE_SCOPES, SCOPES, AccessToken, Principal
from core.auth._revocation import authorize, end_sessions, logout
from core.auth._sessions import session_principal
from core.auth._tokens import ALGORITHMS, LEEWAY_SECONDS, decode_access_token, issue_access_token, signing_key

__all__ = [
    "ALGORITHMS",
    "LEEWAY_SECONDS",
    "ROLE_SCOPES",
    "SCOPES",
    "AccessToken",
    "Principal",
    "authenticate",
    "authorize",
    "create_user",
    "decode_access_token",
    "end_sessions",
    "grant",
    "hash_password",
    "issue_access_token",
    "logout",
    "needs_rehash",
    "normalize_email",
    "password_grant",
    "refresh_grant",
    "register",
    "revoke_refresh_token",
    "session_principal",
    "signing_key",
]
