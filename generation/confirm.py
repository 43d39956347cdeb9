"""Asking before paid generation: a confirmation step the server checks.

Queueing jobs on a paid backend (``generation.costs``: a price above 0) first
renders a page that states prompts × images and the estimated cost, with the
same request in hidden fields and a signed token of exactly what it describes.
Only a post carrying a token that matches the request as it is now queues
anything, so a changed selection, a forged field or a token older than an hour
leads back to the confirmation, never to a bill. Plain forms, no JavaScript.
"""

from __future__ import annotations

import json

from django.core import signing

SALT = "generation.jobs.confirm"
MAX_AGE_S = 3600


def fingerprint(*, study_id, backend, model, n_seeds, params, prompt_ids) -> str:
    """What a confirmation covers: the study, backend, model, seeds, parameters
    and the exact prompts."""
    return json.dumps(
        [study_id, backend, model, n_seeds, params, sorted(prompt_ids)],
        sort_keys=True,
    )


def token_for(fp: str) -> str:
    return signing.dumps(fp, salt=SALT)


def is_confirmed(token: str, fp: str) -> bool:
    if not token:
        return False
    try:
        return signing.loads(token, salt=SALT, max_age=MAX_AGE_S) == fp
    except signing.BadSignature:  # also expired: ask again
        return False
