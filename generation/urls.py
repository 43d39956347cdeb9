"""Staff pages for generation, mounted under /generation/."""

from django.urls import path

from . import views

app_name = "generation"

urlpatterns = [
    path("", views.study_list, name="studies"),
    path("studies/<int:study_id>/", views.study_detail, name="study"),
    path("studies/<int:study_id>/prompts/", views.prompts_add, name="prompts_add"),
    path("studies/<int:study_id>/jobs/", views.jobs_add, name="jobs_add"),
    path("jobs/<int:job_id>/", views.job_detail, name="job"),
    path("jobs/<int:job_id>/progress/", views.job_progress, name="job_progress"),
    path("jobs/<int:job_id>/cancel/", views.job_cancel, name="job_cancel"),
    path("jobs/<int:job_id>/retry/", views.job_retry, name="job_retry"),
]
