"""The router's shared token: a Secret created once per ModelDeployment, then only read.

This is the one place that draws the random value, at the create-if-absent edge: the builder takes the
token as input, and a Secret that exists is never rewritten, so passes (and operator restarts) keep the
token the routers already loaded. A user who deletes the Secret gets a new token on the next pass; the
routers re-read the mounted file when the kubelet refreshes it.

The value is returned to the caller for the synthetic traffic's header only: never logged, never put
in status or Events.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from kubetune.builders.router import build_router_token_secret, router_token_of, router_token_secret_name
from kubetune.kube.client import KubeClient
from kubetune.reconcile.apply import check_owned, create_if_absent

TOKEN_BYTES = 32


async def ensure_router_token(client: KubeClient, mdep: Mapping[str, Any]) -> str | None:
    """The token in the object's router Secret, creating the Secret when absent.

    None when our Secret holds no usable token (someone edited it): it is left alone, and the routers
    then honour no override or synthetic header until it is fixed or deleted. A Secret of that name
    that this ModelDeployment does not control is never read: NameConflict.
    """
    meta = mdep["metadata"]
    name = router_token_secret_name(str(meta["name"]))
    stored = await client.get("v1", "Secret", meta["namespace"], name)
    if stored is not None:
        check_owned({**stored, "kind": "Secret"}, str(meta["uid"]))
    else:
        # Created since our read (another writer)? Then that one is kept and read back.
        secret = build_router_token_secret(mdep, secrets.token_urlsafe(TOKEN_BYTES))
        stored = await create_if_absent(client, secret)
    return router_token_of(stored)
