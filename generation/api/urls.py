from django.urls import path

from . import views

urlpatterns = [
    path("generation/jobs/", views.job_create, name="api-generation-jobs"),
    path("generation/jobs/<int:job_id>/", views.job_detail, name="api-generation-job"),
]
