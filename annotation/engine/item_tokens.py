"""Opaque names for the items an annotator is shown.

Every item on screen (a counted image's assignment, an attention check, a repeat,
a blind item) is named by a token of one shape: 22 URL-safe characters, the
AES-128 encryption of one 16-byte block (purpose, kind, row id, six zero bytes)
under a key derived from ``SECRET_KEY``. A client cannot read the kind or the id
out of it, cannot make one (a random token decrypts to the zero tail once in
2**48 tries, and must then name its own item), and two items never share one;
a repeat of an image is another row, so it has another token.

Two purposes, two tokens per item: ``ITEM`` names it in the rating and skip
URLs, ``MEDIA`` names its picture (``/media/i/<token>``). The picture of the
image preloaded behind the current one is therefore no handle to rate it with,
so an attention check cannot be stepped over by rating the image behind it.

Nothing is stored: the engine's one-statement paths stay one statement, and the
token maps back to the row it names with no lookup table.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from functools import lru_cache

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from django.conf import settings

from core.exceptions import NotFound

ASSIGNMENT = b"a"  # a counted image's lease
STREAM = b"q"  # an uncounted stream item (check, repeat, blind)
# A study image shown outside the rating stream (the taste portrait): named by
# the image itself, never in the rating and skip URLs.
IMAGE = b"i"
ITEM = b"R"
MEDIA = b"M"
_TAIL = bytes(6)
TOKEN_LENGTH = 22


@lru_cache(maxsize=4)
def _cipher(secret: str) -> Cipher:
    key = hashlib.sha256(b"palate-item-token:" + secret.encode()).digest()[:16]
    # One block, encrypted alone: ECB of a single block is the AES permutation.
    return Cipher(algorithms.AES(key), modes.ECB())  # noqa: S305


_contexts = threading.local()


def _aes(block: bytes, decrypt: bool = False) -> bytes:
    """One block through this thread's context for the current key. ECB keeps
    no state from block to block, so one context serves every token (making
    one per token cost more than the encryption): never finalised, never
    shared between threads (an OpenSSL context is not thread-safe)."""
    secret = settings.SECRET_KEY
    kept = getattr(_contexts, "kept", None)
    if kept is None or kept[0] != secret:
        cipher = _cipher(secret)
        kept = _contexts.kept = (secret, cipher.encryptor(), cipher.decryptor())
    return kept[2 if decrypt else 1].update(block)


def item_token(*, kind: bytes, pk: int, purpose: bytes = ITEM) -> str:
    raw = _aes(purpose + kind + pk.to_bytes(8, "big") + _TAIL)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def item_resolve(
    token: str, *, purpose: bytes = ITEM, kinds: tuple = (ASSIGNMENT, STREAM)
) -> tuple[bytes, int]:
    """(kind, row id) named by ``token``, of one of ``kinds``; NotFound for
    anything else."""
    missing = NotFound("No such item.")
    if not isinstance(token, str) or len(token) != TOKEN_LENGTH:
        raise missing
    try:
        raw = base64.urlsafe_b64decode(token + "==")
    except ValueError:
        raise missing from None
    if len(raw) != 16 or item_token_raw(raw) != token:
        raise missing  # a non-canonical spelling of some block
    block = _aes(raw, decrypt=True)
    if block[:1] != purpose or block[1:2] not in kinds:
        raise missing
    if block[10:] != _TAIL:
        raise missing
    return block[1:2], int.from_bytes(block[2:10], "big")


def item_token_raw(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
