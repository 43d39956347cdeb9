"""Making a retired version active again is called a rollback only when it goes
back to an older version than the active one (issue 22, finding 13)."""

import pytest

from rewardmodel import services

from .test_promotion import _version

pytestmark = pytest.mark.django_db


def test_the_reason_says_rollback_only_when_going_back(tmp_path):
    v1 = _version(tmp_path, 0.7, "v1")
    v2 = _version(tmp_path, 0.8, "v2")
    services.model_version_promote(version=v1)
    services.model_version_promote(version=v2, force=True)
    services.model_version_rollback(version=v1, reason="v2 misbehaves")
    v1.refresh_from_db()
    assert v1.promotion_reason == f"rollback to v{v1.pk}: v2 misbehaves"
    services.model_version_rollback(version=v2, reason="fixed")
    v2.refresh_from_db()
    assert v2.is_active and v2.promotion_reason == f"v{v2.pk} made active: fixed"
