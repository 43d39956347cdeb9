"""Item tokens made and read through the per-thread AES contexts
(``item_tokens._aes``) are those a fresh context per token gives: under a
changed ``SECRET_KEY`` and from several threads at once."""

import base64
import hashlib
import threading

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from annotation.engine.item_tokens import (
    ASSIGNMENT,
    MEDIA,
    STREAM,
    item_resolve,
    item_token,
)


def reference(secret: str, kind: bytes, pk: int, purpose: bytes = b"R") -> str:
    """The token from a context made for it alone (the definition)."""
    key = hashlib.sha256(b"palate-item-token:" + secret.encode()).digest()[:16]
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305
    raw = enc.update(purpose + kind + pk.to_bytes(8, "big") + bytes(6))
    return base64.urlsafe_b64encode(raw + enc.finalize()).rstrip(b"=").decode()


CASES = [
    (kind, pk) for kind in (ASSIGNMENT, STREAM) for pk in (1, 77, 2**40, 2**63 - 1)
]


def test_tokens_are_the_one_context_tokens_and_read_back(settings):
    for secret in ("first-secret-" + "x" * 40, "second-secret-" + "y" * 40):
        settings.SECRET_KEY = secret  # the contexts follow the key
        for kind, pk in CASES:
            for purpose in (b"R", MEDIA):
                token = item_token(kind=kind, pk=pk, purpose=purpose)
                assert token == reference(secret, kind, pk, purpose)
                assert item_resolve(token, purpose=purpose) == (kind, pk)


def test_threads_each_get_their_own_context(settings):
    settings.SECRET_KEY = "threaded-secret-" + "z" * 40
    expected = {pk: reference(settings.SECRET_KEY, ASSIGNMENT, pk) for pk in range(400)}
    wrong = []

    def work(offset: int) -> None:
        for i in range(2000):
            pk = (i * 7 + offset) % 400
            token = item_token(kind=ASSIGNMENT, pk=pk)
            if token != expected[pk] or item_resolve(token) != (ASSIGNMENT, pk):
                wrong.append(pk)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not wrong
