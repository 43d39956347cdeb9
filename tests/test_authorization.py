"""Who may do what, for every URL pattern and every API operation (issue 10).

The routes are walked from the URLconf and the operations read from the OpenAPI
schema, and each must have a row in ``PAGES`` / ``API`` below: a new endpoint
without a row fails ``test_every_route_and_operation_has_a_rule``, so it cannot be
forgotten. Each row says, per HTTP method, which of four callers may use it:

* ``anon``: not signed in;
* ``member``: an annotator who joined study A through A's link (session and token);
* ``other``: an annotator who joined study B only;
* ``staff``.

"ok" means not refused (any answer but 401/403/404/a login redirect, and never a
5xx; "ok404" also allows a 404 for an object not ready); "no" means refused
(401, 403, a redirect to the login page, or a 404 that does not disclose someone
else's object). A method a row does not list must not
succeed for anyone. Admin pages (``admin:`` namespace) follow one rule: staff
only, except the login page.
"""

import re

import pytest
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, resolve, reverse
from rest_framework.authtoken.models import Token

from annotation import services
from annotation.datasets.services import export_jobs
from annotation.engine.item_tokens import ASSIGNMENT, MEDIA, item_token
from annotation.models import Study
from generation import services as generation_services
from portrait import services as portrait_services
from rewardmodel import services as rm_services
from rewardmodel.models import ModelVersion
from steering.models import Optimization
from tests.factories import StudyFactory, make_images, png_bytes

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

ROLES = ("anon", "member", "other", "staff")
ALL = dict.fromkeys(ROLES, "ok")
STAFF = {"anon": "no", "member": "no", "other": "no", "staff": "ok"}
ANNOTATORS = {"anon": "no", "member": "ok", "other": "ok", "staff": "ok"}
MEMBER = {"anon": "no", "member": "ok", "other": "no", "staff": "ok"}
# Another annotator's assignment: only its holder (staff included: not theirs).
HOLDER = {"anon": "no", "member": "ok", "other": "no", "staff": "no"}

# Pages (non-API URL names) -> {method: who}.
PAGES = {
    "annotation:home": {"GET": ALL},
    "annotation:join": {"GET": ALL, "POST": ALL},
    "annotation:rate": {"GET": MEMBER},
    # Consent without the link is for staff previews; members come via join.
    "annotation:consent": {"GET": STAFF, "POST": STAFF},
    "annotation:instructions": {"GET": MEMBER},
    "annotation:start": {"POST": MEMBER},
    "annotation:pause": {"GET": MEMBER, "POST": MEMBER},
    "annotation:resume": {"POST": MEMBER},
    # The researchers' dashboard: staff only, every page and action.
    "dashboard:home": {"GET": STAFF},
    "dashboard:study": {"GET": STAFF},
    "dashboard:annotators": {"GET": STAFF},
    "dashboard:annotator": {"GET": STAFF},
    "dashboard:annotator_action": {"POST": STAFF},
    "dashboard:quality": {"GET": STAFF},
    "dashboard:quality_settings": {"POST": STAFF},
    "dashboard:check_upload": {"POST": STAFF},
    "dashboard:check_remove": {"POST": STAFF},
    "dashboard:model": {"GET": STAFF},
    "dashboard:retrain": {"POST": STAFF},
    "dashboard:nightly": {"POST": STAFF},
    "dashboard:promote": {"POST": STAFF},
    "dashboard:rollback": {"POST": STAFF},
    "dashboard:run": {"GET": STAFF},
    "annotation:done": {"GET": MEMBER},
    # Any item shown (counted image, check, repeat) by its opaque token: only
    # the annotator dealt it (tests/annotation/test_qc_uniform.py: every kind).
    "annotation:item_rate": {"POST": HOLDER},
    "annotation:item_skip": {"POST": HOLDER},
    "annotation:study_exports": {"GET": STAFF, "POST": STAFF},
    "annotation:study_exports_list": {"GET": STAFF},
    "generation:studies": {"GET": STAFF},
    "generation:study": {"GET": STAFF},
    "generation:prompts_add": {"POST": STAFF},
    "generation:jobs_add": {"POST": STAFF},
    "generation:job": {"GET": STAFF},
    "generation:job_progress": {"GET": STAFF},
    "generation:job_cancel": {"POST": STAFF},
    "generation:job_retry": {"POST": STAFF},
    "dashboard:dealing_settings": {"POST": STAFF},
    # The taste portrait: the participant's own page and answers (staff, not
    # participants, see each person's copy on the dashboard: portrait:staff).
    "portrait:page": {"GET": HOLDER},
    "portrait:feedback": {"POST": HOLDER},
    "portrait:staff": {"GET": STAFF},
    "portrait:settings": {"GET": STAFF, "POST": STAFF},
    "steering:index": {"GET": STAFF},
    "steering:estimate": {"GET": STAFF},
    "steering:create": {"POST": STAFF},
    "steering:detail": {"GET": STAFF},
    "steering:progress": {"GET": STAFF},
    "steering:paired_test": {"POST": STAFF},
    "media": {"GET": ALL},  # image files: public, named by their sha256
    # An item's picture: the unguessable name is the capability (an <img> and a
    # preload send no token); it says nothing of the item's kind.
    "media_item": {"GET": ALL},
    "schema": {"GET": ALL},
    "api-docs": {"GET": ALL},
    "api-redoc": {"GET": ALL},
}

# API URL names -> {method: who}; every operation of the schema must be here.
API = {
    "api-study-list": {"GET": ANNOTATORS, "POST": STAFF},
    "api-image-upload": {"POST": STAFF},
    "api-assignment-next": {"POST": MEMBER},
    "api-progress": {"GET": STAFF},
    "api-rating": {"POST": HOLDER},
    "api-skip": {"POST": HOLDER},
    "api-export-list": {"GET": STAFF, "POST": STAFF},
    "api-export-detail": {"GET": STAFF},
    # A queued export has no file yet: staff get a 404 that refuses nothing.
    "api-export-download": {"GET": {**STAFF, "staff": "ok404"}},
    "api-attention-checks": {"GET": STAFF, "POST": STAFF},
    "api-attention-check": {"GET": STAFF, "DELETE": STAFF},
    "api-quality-config": {"GET": STAFF, "PATCH": STAFF},
    "api-study-dealing": {"GET": STAFF, "PATCH": STAFF},
    "api-quality-annotators": {"GET": STAFF},
    # Erasure: staff only (the test sends no confirmation, so nothing is erased).
    "api-annotator-erase": {"POST": STAFF},
    "api-rm-training-create": {"POST": STAFF},
    "api-rm-training": {"GET": STAFF},
    "api-rm-versions": {"GET": STAFF},
    "api-rm-version-annotators": {"GET": STAFF},
    "api-rm-predict": {"POST": STAFF},
    "api-generation-jobs": {"POST": STAFF},
    "api-generation-job": {"GET": STAFF},
}

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
ADMIN_PUBLIC = {"admin:login", "admin:logout"}
# Needs query parameters naming a model field; refuses anything else (403).
# (view_on_site needs a content type and object that match.)
ADMIN_SKIP = {"admin:autocomplete", "admin:view_on_site"}
# Bodies that get past validation, so the answer is about who is asking.
BODIES = {
    "api-rating": (b'{"score": 4}', "application/json"),
    "annotation:item_rate": (b"score=4", "application/x-www-form-urlencoded"),
}


def walk(patterns=None, prefix="", namespace=""):
    """(route, name, pattern) for every URL pattern, includes flattened."""
    for p in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(p, URLResolver):
            ns = namespace
            if p.namespace:
                ns = f"{namespace}:{p.namespace}" if namespace else p.namespace
            yield from walk(p.url_patterns, prefix + str(p.pattern), ns)
        elif isinstance(p, URLPattern):
            name = f"{namespace}:{p.name}" if namespace and p.name else p.name
            yield prefix + str(p.pattern), name, p


def test_every_route_and_operation_has_a_rule(client):
    for route, name, _ in walk():
        if route.startswith("admin/"):
            continue  # Django's admin: one rule (staff only) below
        assert name, f"URL pattern {route!r} has no name: name it and add a rule"
        assert name in PAGES or name in API, f"no authorization rule for {name}"
    schema = client.get("/api/v1/schema/", HTTP_ACCEPT="application/json").json()
    operations = 0
    for path, item in schema["paths"].items():
        url = re.sub(r"\{[^}]+\}", "1", path)
        name = resolve(url).url_name
        for method in item:
            if method.upper() not in METHODS:
                continue
            operations += 1
            assert method.upper() in API.get(name, {}), (
                f"no authorization rule for {method.upper()} {path} ({name})"
            )
    assert operations >= len(API)
    # And no rule for something that no longer exists.
    names = {name for _, name, _ in walk()}
    assert set(PAGES) | set(API) <= names


@pytest.fixture
def world(db, staff_user):
    """Study A with a member holding a lease, study B with its own annotator."""
    a = StudyFactory(slug="study-a", raters_per_image=3)
    b = StudyFactory(slug="study-b")
    images = make_images(a, 4)
    make_images(b, 2, start=50)
    clients, tokens = {"anon": Client()}, {}
    for role, study in (("member", a), ("other", b)):
        c = Client()
        r = c.post(
            reverse("annotation:join", args=[study.slug]),
            {"t": study.invite_token, "agree": "on"},
        )
        assert r.status_code == 302
        c.post(reverse("annotation:start", args=[study.slug]))
        clients[role] = c
        user_id = int(c.session["_auth_user_id"])
        tokens[role] = Token.objects.create(user_id=user_id).key
    staff = Client()
    staff.force_login(staff_user)
    clients["staff"] = staff
    tokens["staff"] = Token.objects.create(user=staff_user).key
    member = services.annotator_get_or_create_for_user(_user(clients["member"]))
    lease = services.assignment_claim(annotator=member, study=a)[0]
    prompt = generation_services.prompt_create(study=a, text="a red circle")
    (job,) = generation_services.jobs_create(
        prompts=[prompt], backend="procedural", n_seeds=1, enqueue=False
    )
    run = rm_services.training_run_create(study=a)
    version = ModelVersion.objects.create(
        study=a,
        backbone="x",
        weights_loaded=False,
        checkpoint_path="x",
        checkpoint_sha256="0" * 64,
    )
    export = export_jobs.export_create(study=a, fmt="csv")
    # Study A offers the taste portrait, so its rule is about who asks.
    portrait_services.portrait_settings_update(
        study=a, enabled=True, before_completion_redirect=False, min_ratings=5
    )
    check = services.attention_check_create(study=a, data=png_bytes(77), expected_min=2)
    optimization = Optimization.objects.create(
        study=a,
        annotator=member,
        base_prompt="a red circle",
        proposer="beam",
        backend="procedural",
        rounds=1,
        per_round=1,
        max_images=2,
    )
    values = {
        "slug": a.slug,
        "study_id": a.pk,
        "token": item_token(kind=ASSIGNMENT, pk=lease.pk),
        "media_token": item_token(kind=ASSIGNMENT, pk=lease.pk, purpose=MEDIA),
        "path": images[0].file.name,
        "job_id": job.pk,
        "run_id": run.pk,
        "version_id": version.pk,
        "export_id": export.pk,
        "optimization_id": optimization.pk,
        "annotator_id": member.pk,
        "public_id": member.public_id,
        "check_id": check.pk,
    }
    return {"a": a, "clients": clients, "tokens": tokens, "values": values}


def _user(client):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.get(pk=client.session["_auth_user_id"])


def url_for(name: str, pattern: URLPattern, values: dict, study: Study) -> str:
    kwargs = {}
    for key in pattern.pattern.regex.groupindex:
        assert key in values, f"no test value for URL parameter {key!r} of {name}"
        kwargs[key] = values[key]
    url = reverse(name, kwargs=kwargs)
    if name == "annotation:join":
        url += f"?t={study.invite_token}"
    return url


def refused(response) -> bool:
    if response.status_code in (401, 403, 404):
        return True
    location = response.get("Location", "")
    return response.status_code == 302 and "/admin/login/" in location


def call(world, role: str, method: str, url: str):
    client = world["clients"][role]
    headers = {}
    if url.startswith("/api/") and role in world["tokens"]:
        headers["HTTP_AUTHORIZATION"] = f"Token {world['tokens'][role]}"
    # Each call in a savepoint that is rolled back: one caller's write (a rating,
    # a job) does not change what the next caller meets.
    body, ctype = BODIES.get(
        resolve(url.split("?")[0]).view_name, (b"", "application/json")
    )
    if method == "POST" and "/join?t=" in url:  # the form carries the token
        body = url.split("?", 1)[1].encode()
        ctype = "application/x-www-form-urlencoded"
    # Each request rolled back, as a TestCase rolls back a test: marked like
    # TestCase's own block, so the services' durable transactions may run in it.
    block = transaction.atomic()
    block._from_testcase = True
    with block:
        response = client.generic(method, url, body, ctype, **headers)
        transaction.set_rollback(True)
    return response


def _rows():
    rows = []
    for _route, name, _pattern in walk():
        if name in PAGES:
            rows.append((name, PAGES[name]))
        elif name in API:
            rows.append((name, API[name]))
        elif name and name.startswith("admin:") and name not in ADMIN_SKIP:
            who = ALL if name in ADMIN_PUBLIC else STAFF
            if name.endswith(("_delete", "_add", "_change")):
                # Records are protected: staff may be refused adding, changing or
                # deleting some (read-only admins); still never a 5xx.
                who = {**STAFF, "staff": "any"}
            rows.append((name, {"GET": who}))
    return rows


ROWS = {name: rule for name, rule in _rows()}
PATTERNS = {name: pattern for _, name, pattern in walk()}


@pytest.mark.parametrize("name", sorted(n for n in ROWS if not n.startswith("admin:")))
def test_matrix(world, name):
    check(world, name)


def test_admin_pages_are_staff_only(world):
    for name in sorted(n for n in ROWS if n.startswith("admin:")):
        check(world, name, admin=True)


def verdict(response, expected: str | None) -> str | None:
    """What is wrong with ``response`` for the expected outcome, or None."""
    status = response.status_code
    if status >= 500:
        return f"{status}"
    if expected is None:  # a method the row does not list
        return None if status >= 400 or refused(response) else f"{status} (unlisted)"
    if expected == "ok404" and status == 404:
        return None
    if expected in ("ok", "ok404") and refused(response):
        return f"refused ({status})"
    if expected == "no" and not refused(response):
        return f"allowed ({status})"
    return None


def check(world, name: str, admin: bool = False) -> None:
    rule = ROWS[name]
    pattern = PATTERNS[name]
    values = dict(world["values"])
    if admin:
        values.update(
            app_label="annotation",
            object_id=str(world["a"].pk),
            content_type_id="1",
            url="x",
            user_id="1",
            model_name="study",
        )
        try:
            url = url_for(name, pattern, values, world["a"])
        except Exception:  # an admin pattern these values cannot fill
            return
    else:
        url = url_for(name, pattern, values, world["a"])
    failures = []
    for method in METHODS:
        who = rule.get(method)
        if admin and method != "GET":
            continue
        for role in ROLES:
            r = call(world, role, method, url)
            problem = verdict(r, None if who is None else who[role])
            if problem:
                failures.append(f"{method} {url} as {role}: {problem}")
    assert not failures, "\n".join(failures)
