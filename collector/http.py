"""HTTP client facts shared by everything that talks to a server (the Hub loader, remotes).

huggingface_hub moved from ``requests`` to ``httpx`` (and ``httpx2``) across versions; a
connection-level failure surfaces as that client's own exception, which callers turn into one
``RemoteError`` line.
"""

from __future__ import annotations

import contextlib

__all__ = ["transport_errors"]


def transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP clients' connection-level exception bases installed here (httpx, requests)."""
    found: list[type[BaseException]] = []
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError")):
        with contextlib.suppress(ImportError, AttributeError):
            found.append(getattr(__import__(module), name))
    with contextlib.suppress(ImportError):
        import requests

        found.append(requests.ConnectionError)
    return tuple(found)
