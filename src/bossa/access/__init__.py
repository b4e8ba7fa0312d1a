"""Access control: API tokens and identity-provider JWTs, roles and the permissions each
route needs, and the principal every audit records. See docs/security.md."""

from bossa.access.models import ROLE_PERMISSIONS, Permission, Principal, Role, allowed
from bossa.access.service import (
    Authenticator,
    cli_principal,
    create_token,
    list_tokens,
    require,
    revoke_token,
)
from bossa.access.settings import AccessSettings

__all__ = [
    "ROLE_PERMISSIONS",
    "AccessSettings",
    "Authenticator",
    "Permission",
    "Principal",
    "Role",
    "allowed",
    "cli_principal",
    "create_token",
    "list_tokens",
    "require",
    "revoke_token",
]
