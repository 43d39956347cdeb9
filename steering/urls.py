"""Staff pages for prompt steering, mounted under /steering/."""

from django.urls import path

from . import views

app_name = "steering"

urlpatterns = [
    path("", views.index, name="index"),
    path("estimate/", views.estimate, name="estimate"),
    path("runs/", views.run_create, name="create"),
    path("runs/<int:optimization_id>/", views.detail, name="detail"),
    path("runs/<int:optimization_id>/progress/", views.progress, name="progress"),
    path(
        "runs/<int:optimization_id>/paired-test/",
        views.paired_test,
        name="paired_test",
    ),
]
