"""Where a hosted backend's API key may go, and how a result is downloaded.

A provider's answer can name URLs (BFL's ``polling_url``, ``result.sample``). The
key is sent only to the configured API origin, or to a regional host under the
same domain (``api.eu.bfl.ai`` for ``https://api.bfl.ai``), over the configured
scheme: production settings require HTTPS there, tests point it at an
``http://127.0.0.1`` fake. Downloads go without the key, follow a bounded number
of redirects (never from HTTPS down to HTTP) and stop reading at a cap.
"""

from __future__ import annotations

from urllib.parse import urljoin, urlsplit

from .base import PermanentError, TransientError

MAX_REDIRECTS = 5
CHUNK = 64 * 1024
ERROR_BODY_BYTES = 4096


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


def key_allowed(url: str, base_url: str) -> bool:
    """Whether ``url`` may receive the key of the API at ``base_url``."""
    try:
        scheme, host, port = _origin(url)
        base_scheme, base_host, base_port = _origin(base_url)
    except ValueError:  # a malformed port
        return False
    if not host or scheme != base_scheme or scheme not in ("https", "http"):
        return False
    if (host, port) == (base_host, base_port):
        return True
    # Regional hosts of the same API: api.bfl.ai → *.bfl.ai, over HTTPS only.
    labels = base_host.split(".")
    if scheme != "https" or port != 443 or labels[0] != "api" or len(labels) < 3:
        return False
    return host.endswith("." + ".".join(labels[1:]))


def _next_url(current: str, location: str | None, base_url: str) -> str:
    if not location:
        raise PermanentError("A redirect without a Location header.")
    target = urljoin(current, location)
    scheme = urlsplit(target).scheme
    secure = urlsplit(base_url).scheme == "https"
    if scheme not in ("https", "http") or (
        scheme == "http" and (secure or urlsplit(current).scheme == "https")
    ):
        raise PermanentError(f"A redirect to a refused URL scheme ({scheme or '?'}).")
    return target


def download_capped(client, url: str, *, base_url: str, max_bytes: int, check):
    """GET ``url`` without credentials, following at most ``MAX_REDIRECTS``
    redirects, and return the body; refused as soon as it is over ``max_bytes``
    (from Content-Length, or after reading at most ``max_bytes`` + one chunk).
    ``check(response)`` raises the backend's error for a 4xx/5xx answer."""
    import httpx

    current = _next_url(url, url, base_url)
    for _ in range(MAX_REDIRECTS + 1):
        try:
            with client.stream("GET", current, follow_redirects=False) as response:
                if response.is_redirect:
                    current = _next_url(
                        current, response.headers.get("location"), base_url
                    )
                    continue
                if response.status_code >= 400:
                    check(_bounded_copy(response))
                return _body(response, max_bytes)
        except httpx.TimeoutException as exc:
            raise TransientError(f"Download timed out ({type(exc).__name__}).") from exc
        except httpx.TransportError as exc:
            raise TransientError(f"Download failed: {exc}.") from exc
    raise PermanentError(f"More than {MAX_REDIRECTS} redirects for the result.")


def _bounded_copy(response):
    """The error answer with at most ``ERROR_BODY_BYTES`` of its body read (for
    the message), as a plain response the backend's ``check`` can parse."""
    import httpx

    head = bytearray()
    for chunk in response.iter_bytes(CHUNK):
        head += chunk
        if len(head) >= ERROR_BODY_BYTES:
            break
    dropped = ("content-encoding", "content-length", "transfer-encoding")
    headers = {k: v for k, v in response.headers.items() if k.lower() not in dropped}
    return httpx.Response(
        response.status_code,
        headers=headers,
        content=bytes(head[:ERROR_BODY_BYTES]),
        request=response.request,
    )


def _body(response, max_bytes: int) -> bytes:
    length = response.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_bytes:
        raise PermanentError(
            f"The result is {int(length)} bytes, over the {max_bytes}-byte limit "
            "(not downloaded)."
        )
    data = bytearray()
    for chunk in response.iter_bytes(CHUNK):
        data += chunk
        if len(data) > max_bytes:
            raise PermanentError(
                f"The result is over the {max_bytes}-byte limit (download stopped)."
            )
    return bytes(data)
