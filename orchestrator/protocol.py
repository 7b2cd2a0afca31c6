"""Wire constants of the gRPC API beyond the protobuf messages, shared by the server
(`orchestrator.server`), the SDK (`orchestrator.client`) and the load generator
(`loadtests`). Importing this module imports nothing."""

from __future__ import annotations

# Trailing metadata key carrying a failed task's partial usage (a serialized TaskUsage).
USAGE_TRAILER = "inflection-usage-bin"
# RESOURCE_EXHAUSTED: trailing metadata, milliseconds after which a retry is likely to
# be admitted.
RETRY_AFTER_TRAILER = "retry-after-ms"
# Request metadata key of the bearer token (`authorization: Bearer <token>`).
AUTHORIZATION = "authorization"


def auth_metadata(token: str | None) -> tuple[tuple[str, str], ...] | None:
    """The request metadata that authenticates with `token` (None: no token)."""
    return ((AUTHORIZATION, f"Bearer {token}"),) if token else None
