"""Signals other apps listen to (``annotation`` imports no other app).

``annotator_erased`` is sent inside the erasure's transaction, so what a receiver
deletes is deleted together with the rest, or not at all. Arguments:
``annotator_id`` and ``study_ids`` (the studies the person took part in).
Receivers: ``rewardmodel`` (per-annotator metrics, held-out predictions and
checkpoint heads) and ``steering`` (the person's optimisation runs and tests).
"""

from django.dispatch import Signal

annotator_erased = Signal()

# Sent after a new rating in a study dealt ``adaptive`` (engine.services.dealing):
# the annotator's ranking may have moved. Arguments: ``study_id``,
# ``annotator_id``. Receiver: ``rewardmodel`` (throttled refresh, after commit).
dealing_refresh_wanted = Signal()
