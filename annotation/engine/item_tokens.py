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
from functools import lru_cache

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from django.conf import settings

from core.exceptions import NotFound

ASSIGNMENT = b"a"  # a counted image's lease
STREAM = b"q"  # an uncounted stream item (check, repeat, blind)
ITEM = b"R"
MEDIA = b"M"
_TAIL = bytes(6)
TOKEN_LENGTH = 22


@lru_cache(maxsize=4)
def _cipher(secret: str) -> Cipher:
    key = hashlib.sha256(b"palate-item-token:" + secret.encode()).digest()[:16]
    # One block, encrypted alone: ECB of a single block is the AES permutation.
    return Cipher(algorithms.AES(key), modes.ECB())  # noqa: S305


def item_token(*, kind: bytes, pk: int, purpose: bytes = ITEM) -> str:
    block = purpose + kind + pk.to_bytes(8, "big") + _TAIL
    enc = _cipher(settings.SECRET_KEY).encryptor()
    raw = enc.update(block) + enc.finalize()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def item_resolve(token: str, *, purpose: bytes = ITEM) -> tuple[bytes, int]:
    """(kind, row id) named by ``token``; NotFound for anything else."""
    missing = NotFound("No such item.")
    if not isinstance(token, str) or len(token) != TOKEN_LENGTH:
        raise missing
    try:
        raw = base64.urlsafe_b64decode(token + "==")
    except ValueError:
        raise missing from None
    if len(raw) != 16 or item_token_raw(raw) != token:
        raise missing  # a non-canonical spelling of some block
    dec = _cipher(settings.SECRET_KEY).decryptor()
    block = dec.update(raw) + dec.finalize()
    if block[:1] != purpose or block[1:2] not in (ASSIGNMENT, STREAM):
        raise missing
    if block[10:] != _TAIL:
        raise missing
    return block[1:2], int.from_bytes(block[2:10], "big")


def item_token_raw(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
