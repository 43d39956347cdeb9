"""The researchers' dashboard, mounted under /staff/."""

from django.urls import path

from . import dealing_views, views

app_name = "dashboard"

urlpatterns = [
    path("", views.home, name="home"),
    path("studies/<int:study_id>/", views.study, name="study"),
    path(
        "studies/<int:study_id>/dealing/",
        dealing_views.dealing_settings,
        name="dealing_settings",
    ),
    path("studies/<int:study_id>/annotators/", views.annotators, name="annotators"),
    path(
        "studies/<int:study_id>/annotators/<int:annotator_id>/",
        views.annotator,
        name="annotator",
    ),
    path(
        "studies/<int:study_id>/annotators/<int:annotator_id>/action/",
        views.annotator_action,
        name="annotator_action",
    ),
    path("studies/<int:study_id>/quality/", views.quality, name="quality"),
    path(
        "studies/<int:study_id>/quality/settings/",
        views.quality_settings,
        name="quality_settings",
    ),
    path(
        "studies/<int:study_id>/quality/checks/",
        views.check_upload,
        name="check_upload",
    ),
    path(
        "studies/<int:study_id>/quality/checks/<int:check_id>/remove/",
        views.check_remove,
        name="check_remove",
    ),
    path("model/", views.model, name="model"),
    path("model/retrain/", views.retrain, name="retrain"),
    path("model/nightly/", views.nightly, name="nightly"),
    path("model/versions/<int:version_id>/promote/", views.promote, name="promote"),
    path("model/versions/<int:version_id>/rollback/", views.rollback, name="rollback"),
    path("model/runs/<int:run_id>/", views.run, name="run"),
]
