"""Status changes racing the requests they must stop, on PostgreSQL.

Each trial starts two threads at a barrier (each thread its own connection):
one sends the annotator's request over the real API, the other excludes or
erases that annotator, through the service or the admin action. 300 trials
catch a race that happens 2% of the time with probability 1 - 0.98**300 > 99.7%.
Afterwards: no excluded or erased annotator holds a valid rating or a live lease,
no request answered 500, nothing deadlocked, and the one invariant check (also
run after every test here) finds every counter equal to its rows.
"""

import threading
from collections import Counter

import pytest
from django.db import connection
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from annotation import services
from annotation.models import Annotator, Assignment, Rating
from tests.factories import AnnotatorFactory, StudyFactory, join, make_images
from tests.items import token_of

TRIALS = 300

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]


def api_client(annotator) -> APIClient:
    client = APIClient(raise_request_exception=False)  # a crash must read as 500
    token, _ = Token.objects.get_or_create(user=annotator.user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


def admin_client(django_user_model) -> Client:
    staff = django_user_model.objects.create_user(
        username="race-staff", password="pw", is_staff=True, is_superuser=True
    )
    client = Client(raise_request_exception=False)
    client.force_login(staff)
    return client


def admin_action(client: Client, action: str, annotator_id: int) -> int:
    return client.post(
        "/admin/annotation/annotator/",
        {"action": action, "_selected_action": [annotator_id], "index": 0},
    ).status_code


def race(trials, request_side, status_side):
    """Run both sides of each trial at once; returns their outcomes."""
    barrier = threading.Barrier(2, timeout=60)
    outcomes = {"request": Counter(), "status": Counter()}
    errors = []

    def side(name, fn):
        try:
            for i in range(trials):
                barrier.wait()
                try:
                    outcomes[name][fn(i)] += 1
                except Exception as exc:  # a deadlock or any crash
                    errors.append(f"{name} trial {i}: {exc!r}")
                    outcomes[name]["exception"] += 1
        finally:
            connection.close()

    threads = [
        threading.Thread(target=side, args=("request", request_side)),
        threading.Thread(target=side, args=("status", status_side)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes, errors


def test_exclusion_vs_rating_in_flight(django_user_model):
    study = StudyFactory(raters_per_image=3, quota_per_annotator=5)
    make_images(study, 120)
    annotators = [join(AnnotatorFactory(), study) for _ in range(TRIALS)]
    clients = [api_client(a) for a in annotators]
    leases = [
        services.assignment_claim(annotator=a, study=study)[0] for a in annotators
    ]
    admin = admin_client(django_user_model)

    def rate(i):
        url = f"/api/v1/assignments/{token_of(leases[i])}/rating/"
        return clients[i].post(url, {"score": 5}, format="json").status_code

    def exclude(i):
        if i % 3 == 0:  # every third through the admin action
            return f"admin {admin_action(admin, 'exclude', annotators[i].pk)}"
        services.annotator_set_status(
            annotator=annotators[i], status="excluded", reason="race"
        )
        return "service ok"

    outcomes, errors = race(TRIALS, rate, exclude)
    assert not errors, errors[:5]
    # 201: rated before the exclusion (then invalidated); 403: refused after it.
    assert set(outcomes["request"]) <= {201, 403}, outcomes
    assert set(outcomes["status"]) <= {"admin 302", "service ok"}, outcomes
    ids = [a.pk for a in annotators]
    assert Annotator.objects.filter(pk__in=ids, status="excluded").count() == TRIALS
    assert not Rating.objects.filter(annotator_id__in=ids, is_valid=True).exists()
    assert not Assignment.objects.filter(annotator_id__in=ids, status="leased").exists()
    rated = Rating.objects.filter(annotator_id__in=ids).count()
    assert rated == outcomes["request"][201], outcomes
    drift = services.integrity_check()
    assert drift.ok, drift


def test_exclusion_from_one_study_vs_rating_in_flight(django_user_model):
    """Excluding from study A (``participation_exclude``, also through the
    dashboard's confirmed POST) while the annotator's rating in A is in flight:
    the rating is invalidated or refused (the SQL path included), and their
    rating in study B stays valid."""
    a, b = (StudyFactory(raters_per_image=3, quota_per_annotator=5) for _ in "ab")
    make_images(a, 120)
    make_images(b, 120, start=1000)
    annotators = [join(AnnotatorFactory(), a, b) for _ in range(TRIALS)]
    clients = [api_client(x) for x in annotators]
    for x in annotators:
        (lease,) = services.assignment_claim(annotator=x, study=b)
        services.rating_submit(assignment_id=lease.pk, annotator=x, score=4)
    leases = [services.assignment_claim(annotator=x, study=a)[0] for x in annotators]
    staff = admin_client(django_user_model)

    def rate(i):
        url = f"/api/v1/assignments/{token_of(leases[i])}/rating/"
        return clients[i].post(url, {"score": 5}, format="json").status_code

    def exclude(i):
        if i % 3 == 0:  # every third through the dashboard, confirmed
            url = f"/staff/studies/{a.pk}/annotators/{annotators[i].pk}/action/"
            form = {"action": "exclude", "confirmed": "yes"}
            return f"dashboard {staff.post(url, form).status_code}"
        services.participation_exclude(annotator=annotators[i], study=a)
        return "service ok"

    outcomes, errors = race(TRIALS, rate, exclude)
    assert not errors, errors[:5]
    assert set(outcomes["request"]) <= {201, 403}, outcomes
    assert set(outcomes["status"]) <= {"dashboard 302", "service ok"}, outcomes
    ids = [x.pk for x in annotators]
    mine = Rating.objects.filter(annotator_id__in=ids)
    assert not mine.filter(study=a, is_valid=True).exists()
    assert mine.filter(study=b, is_valid=True).count() == TRIALS
    assert mine.filter(study=a).count() == outcomes["request"][201], outcomes
    assert not Assignment.objects.filter(
        annotator_id__in=ids, study=a, status="leased"
    ).exists()
    assert Annotator.objects.filter(pk__in=ids, status="active").count() == TRIALS
    drift = services.integrity_check()
    assert drift.ok, drift


def test_erasure_vs_claim(django_user_model):
    study = StudyFactory(raters_per_image=3, quota_per_annotator=5)
    make_images(study, 240)
    annotators = [join(AnnotatorFactory(), study) for _ in range(TRIALS)]
    clients = [api_client(a) for a in annotators]
    for a in annotators:  # each has a valid rating that erasure must give back
        (lease,) = services.assignment_claim(annotator=a, study=study)
        services.rating_submit(assignment_id=lease.pk, annotator=a, score=4)
    admin = admin_client(django_user_model)

    def claim(i):
        r = clients[i].post(f"/api/v1/studies/{study.pk}/assignments/next/")
        return r.status_code

    def erase(i):
        if i % 3 == 0:
            return f"admin {admin_action(admin, 'erase', annotators[i].pk)}"
        services.annotator_erase(annotator_id=annotators[i].pk, reason="race")
        return "service ok"

    outcomes, errors = race(TRIALS, claim, erase)
    assert not errors, errors[:5]
    # 200: leased before the erasure (then released); 401/403: refused after it
    # (the account can no longer sign in, or is excluded).
    assert set(outcomes["request"]) <= {200, 401, 403}, outcomes
    assert set(outcomes["status"]) <= {"admin 302", "service ok"}, outcomes
    ids = [a.pk for a in annotators]
    erased = Annotator.objects.filter(pk__in=ids, erased_at__isnull=False)
    assert erased.filter(status="excluded").count() == TRIALS
    assert not Rating.objects.filter(annotator_id__in=ids, is_valid=True).exists()
    assert not Assignment.objects.filter(annotator_id__in=ids, status="leased").exists()
    drift = services.integrity_check()
    assert drift.ok, drift
