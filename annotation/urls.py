"""Web routes of the annotator UI (the API lives in ``annotation.api.urls``)."""

from django.urls import path

from annotation.datasets import views as staff_exports
from annotation.engine import views as rating
from annotation.studies import views

app_name = "annotation"

urlpatterns = [
    path("", views.home, name="home"),
    path("s/<slug:slug>/", rating.rate, name="rate"),
    path("s/<slug:slug>/join", views.join, name="join"),
    path("s/<slug:slug>/consent", views.consent, name="consent"),
    path("s/<slug:slug>/instructions", views.instructions, name="instructions"),
    path("s/<slug:slug>/start", views.start, name="start"),
    path("s/<slug:slug>/pause", views.pause, name="pause"),
    path("s/<slug:slug>/resume", views.resume, name="resume"),
    path("s/<slug:slug>/done", views.done, name="done"),
    # One shape for every item shown (counted image, check, repeat, blind item):
    # an opaque token (annotation.engine.item_tokens), never a row id or a kind.
    path("s/<slug:slug>/i/<str:token>/rate", rating.item_rate, name="item_rate"),
    path("s/<slug:slug>/i/<str:token>/skip", rating.item_skip, name="item_skip"),
    path(
        "staff/studies/<int:study_id>/exports/",
        staff_exports.study_exports,
        name="study_exports",
    ),
    path(
        "staff/studies/<int:study_id>/exports/list",
        staff_exports.study_exports_list,
        name="study_exports_list",
    ),
]
