from django.urls import path

from . import views

app_name = "portrait"

urlpatterns = [
    path("s/<slug:slug>/portrait", views.page, name="page"),
    path("s/<slug:slug>/portrait/feedback", views.feedback, name="feedback"),
    path(
        "staff/studies/<int:study_id>/annotators/<int:annotator_id>/portrait/",
        views.staff_portrait,
        name="staff",
    ),
    path(
        "staff/studies/<int:study_id>/portrait/",
        views.settings_update,
        name="settings",
    ),
]
