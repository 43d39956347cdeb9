"""One staff navigation on every staff page, the home page's staff links, the
annotator table's search by Prolific PID or external id, and "Steer toward
this person"."""

import re

import pytest
from django.urls import reverse

from generation import services as gen
from tests.factories import AnnotatorFactory, join

from .conftest import rate_all

pytestmark = pytest.mark.django_db

NAV = re.compile(r'<header class="staff-top">.*?</header>', re.S)


def staff_pages(study, annotator, prompt):
    job = gen.job_create(prompt=prompt, backend="procedural", n_seeds=1, enqueue=False)
    return [
        reverse("dashboard:home"),
        reverse("dashboard:study", args=[study.pk]),
        reverse("dashboard:annotators", args=[study.pk]),
        reverse("dashboard:annotator", args=[study.pk, annotator.pk]),
        reverse("dashboard:quality", args=[study.pk]),
        reverse("dashboard:model"),
        reverse("generation:studies"),
        reverse("generation:study", args=[study.pk]),
        reverse("generation:job", args=[job.pk]),
        reverse("steering:index"),
        reverse("annotation:study_exports", args=[study.pk]),
    ]


def links(html: str) -> list[str]:
    return re.findall(r'<a [^>]*href="([^"]+)"', html)


def test_every_staff_page_has_the_same_navigation(staff_client, rated_study):
    study, annotators = rated_study
    prompt = gen.prompt_create(study=study, text="a misty forest")
    navs = set()
    for url in staff_pages(study, annotators[0], prompt):
        body = staff_client.get(url).content.decode()
        found = NAV.findall(body)
        assert len(found) == 1, url
        # the same apart from which link is current and the (masked) CSRF token
        navs.add(re.sub(r' aria-current="[^"]+"|value="[^"]+"', "", found[0]))
    assert len(navs) == 1  # the same links everywhere, whatever page is current
    nav = navs.pop()
    assert links(nav) == [
        reverse("dashboard:home"),
        reverse("dashboard:home"),
        reverse("dashboard:model"),
        reverse("generation:studies"),
        reverse("steering:index"),
        reverse("admin:index"),
        reverse("api-docs"),
    ]
    assert f'action="{reverse("admin:logout")}"' in nav  # log out is a POST
    # A study's pages, exports included, carry the study's own links.
    exports = staff_client.get(reverse("annotation:study_exports", args=[study.pk]))
    sub = re.search(r'<nav class="staff-sub".*?</nav>', exports.content.decode(), re.S)
    assert reverse("dashboard:study", args=[study.pk]) in sub.group(0)
    assert 'aria-current="page">Exports' in sub.group(0)
    assert 'href="/"' not in exports.content.decode()  # no "Home" to the public page


def test_home_links_what_staff_can_use(client, staff_user):
    anonymous = client.get("/").content.decode()
    assert reverse("admin:login") in anonymous
    assert reverse("steering:index") not in anonymous
    client.force_login(staff_user)
    body = client.get("/").content.decode()
    for name in ("dashboard:home", "dashboard:model", "generation:studies"):
        assert f'href="{reverse(name)}"' in body
    assert f'href="{reverse("steering:index")}"' in body


def test_find_a_participant_by_prolific_pid_or_external_id(staff_client, rated_study):
    study, annotators = rated_study
    pid = "5f8a9b0c1d2e3f4a5b6c7d8e"
    prolific = AnnotatorFactory(source="prolific", external_id=pid)
    # Queries are ten or more hex digits: a shorter one can also occur inside a
    # random pseudonymous id (a-<12 hex>), which the search matches by substring.
    other = AnnotatorFactory(source="prolific", external_id="5f8a9b0c1d00ffee00001111")
    lab = AnnotatorFactory(source="import", external_id="LAB-0042")
    rate_all(study, [], lambda i, img: 3)
    for a in (prolific, other, lab):
        join(a, study)
    url = reverse("dashboard:annotators", args=[study.pk])

    def found(q):
        body = staff_client.get(url, {"q": q}).content.decode()
        return re.findall(r'data-annotator="([^"]+)"', body), body

    rows, body = found(pid)  # exact
    assert rows == [prolific.public_id]
    assert pid in body  # the row says which id matched
    rows, _ = found("5F8A9B0C1D2E")  # prefix, any case
    assert rows == [prolific.public_id]
    rows, _ = found("5f8a9b0c1d")  # a shorter prefix finds both
    assert sorted(rows) == sorted([prolific.public_id, other.public_id])
    rows, _ = found("lab-0042")
    assert rows == [lab.public_id]
    rows, _ = found("c1d2e3f4a5")  # the middle of a PID is not a match
    assert rows == []
    rows, _ = found(annotators[1].public_id)  # the pseudonymous id still works
    assert rows == [annotators[1].public_id]
    # Without search, no external id is printed in the table.
    assert pid not in staff_client.get(url).content.decode()


def test_annotator_page_links_to_steering_with_them_preselected(
    staff_client, rated_study
):
    study, annotators = rated_study
    a = annotators[0]
    page = staff_client.get(reverse("dashboard:annotator", args=[study.pk, a.pk]))
    href = f"{reverse('steering:index')}?target={study.pk}:{a.pk}"
    assert f'href="{href}"' in page.content.decode()
    form = staff_client.get(href).content.decode()
    assert re.search(rf'<option value="{study.pk}:{a.pk}" selected>', form)
    # A target that is not a choice preselects nothing.
    form = staff_client.get(f"{reverse('steering:index')}?target=0:0").content.decode()
    assert " selected>" not in re.search(r'id="id_target".*?</select>', form, re.S)[0]
