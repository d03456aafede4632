"""Build botocore's User-Agent string once per set of features, not once per request.

botocore rebuilds the header from a dozen components on every request (twice: when the
request dict is made, and again in a 'request-created' handler), sanitising each
component character by character: about a tenth of a run's CPU when quotas are raised.
What goes into it is fixed for a client, except the feature ids that the request's
context adds (retry mode, waiter, paginator...): the string is cached per set of those.
"""

from __future__ import annotations

from typing import Any


def cache_user_agent(client: Any) -> None:
    """Make `client`'s user-agent creator remember the strings it built."""
    creator = getattr(client, "_user_agent_creator", None)
    if creator is None or getattr(creator.to_string, "_batchcopy_cached", False):
        return
    cls = type(creator)
    try:
        from botocore.context import get_context
    except ImportError:  # an older botocore builds no per-request features
        def get_context() -> Any:
            return None

    built: dict[frozenset[str], str] = {}

    def to_string() -> str:
        ctx = get_context()
        key = frozenset(ctx.features) if ctx is not None and ctx.features else frozenset()
        text = built.get(key)
        if text is None:
            text = built[key] = cls.to_string(creator)
        return text

    to_string._batchcopy_cached = True  # type: ignore[attr-defined]
    creator.to_string = to_string
