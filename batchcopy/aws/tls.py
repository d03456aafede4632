"""TLS that is verified on every path: the certificate chain *and* the host name, directly
and through an HTTPS proxy, for botocore's request path and the light path alike (both send
through the client's aiohttp session, made here).

aiobotocore 2.x does neither completely (aiobotocore/httpsession.py `_create_connector`):
without a proxy its context comes from urllib3's `create_urllib3_context`, whose
`check_hostname` is off (urllib3 matches host names itself; aiohttp does not), so any
certificate a trusted CA signed passes for any host; with `HTTPS_PROXY` set and no proxy CA
bundle it passes `ssl=False`, and the service's certificate is not looked at at all. PHI
travels over these connections.

`VerifiedSession` is aiobotocore's session with one change, the connector: an
`ssl.SSLContext` with `check_hostname` on and `CERT_REQUIRED`, trusting exactly what
botocore would (`AWS_CA_BUNDLE` or the profile's `ca_bundle` when set; else the system
store plus botocore's default bundle), used for the service whether or not a proxy carries
the connection (aiohttp tunnels with CONNECT and verifies the service's certificate inside
the tunnel). A proxy CA bundle (botocore's `proxy_ca_bundle`) is trusted too. Passed to
aiobotocore as `AioConfig(http_session_cls=...)`.
"""

from __future__ import annotations

import os
import ssl
from typing import Any

from aiobotocore.httpsession import AIOHTTPSession


def verified_context(verify: Any, extra_cafile: str | None = None) -> ssl.SSLContext:
    """A client context that checks the chain and the host name. `verify`: botocore's
    value (a CA bundle path, or True for the defaults)."""
    if isinstance(verify, str) and verify:
        context = ssl.create_default_context(cafile=os.path.expanduser(verify))
    else:
        context = ssl.create_default_context()  # the system store
        try:
            from botocore.httpsession import get_cert_path

            default = get_cert_path(True)  # botocore's own default bundle (certifi)
            if default and os.path.exists(default):
                context.load_verify_locations(cafile=default)
        except (ImportError, OSError, ssl.SSLError):
            pass
    if extra_cafile:
        context.load_verify_locations(cafile=os.path.expanduser(extra_cafile))
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def describe(verify: Any, proxy: str | None) -> str:
    """The TLS path in words (for `batchcopy doctor`)."""
    trust = (f"the CA bundle {verify}" if isinstance(verify, str) and verify
             else "the system store and botocore's default bundle")
    via = f"through the proxy {proxy} (CONNECT; the service's certificate verified inside " \
          "the tunnel)" if proxy else "directly"
    return f"certificate chain and host name verified against {trust}, {via}"


class VerifiedSession(AIOHTTPSession):  # type: ignore[misc]
    """aiobotocore's aiohttp session, with every TLS connection verified (module doc)."""

    def _create_connector(self, proxy_url: str | None) -> Any:
        import aiohttp

        if self._verify is False:  # only ever a caller's explicit choice (no CLI option)
            context: ssl.SSLContext | bool = False
        else:
            settings = self._proxy_config.settings if proxy_url else {}
            context = verified_context(self._verify, settings.get("proxy_ca_bundle"))
            if self._cert_file:
                context.load_cert_chain(self._cert_file, self._key_file)
        return aiohttp.TCPConnector(limit=self._max_pool_connections, ssl=context,
                                    **self._connector_args)
