from django.urls import path

from annotation.datasets import api as exports
from annotation.engine.api import hot, views
from annotation.participants import api as erasure
from annotation.quality import api as quality
from annotation.studies import api as studies

urlpatterns = [
    path("studies/", studies.study_list, name="api-study-list"),
    path(
        "studies/<int:study_id>/images/", studies.image_upload, name="api-image-upload"
    ),
    path(
        "studies/<int:study_id>/assignments/next/",
        hot.assignment_next,
        name="api-assignment-next",
    ),
    path(
        "studies/<int:study_id>/progress/", studies.study_progress, name="api-progress"
    ),
    path(
        "assignments/<str:token>/rating/",
        hot.rating_create,
        name="api-rating",
    ),
    path("assignments/<str:token>/skip/", views.assignment_skip, name="api-skip"),
    path(
        "studies/<int:study_id>/exports/",
        exports.export_list_create,
        name="api-export-list",
    ),
    path("exports/<int:export_id>/", exports.export_detail, name="api-export-detail"),
    path(
        "studies/<int:study_id>/attention-checks/",
        quality.attention_check_list,
        name="api-attention-checks",
    ),
    path(
        "studies/<int:study_id>/attention-checks/<int:check_id>/",
        quality.attention_check_detail,
        name="api-attention-check",
    ),
    path(
        "studies/<int:study_id>/quality/config/",
        quality.quality_config,
        name="api-quality-config",
    ),
    path(
        "studies/<int:study_id>/quality/annotators/",
        quality.quality_annotators,
        name="api-quality-annotators",
    ),
    path(
        "annotators/<str:public_id>/erase/",
        erasure.annotator_erase,
        name="api-annotator-erase",
    ),
    path(
        "exports/<int:export_id>/download/",
        exports.export_download,
        name="api-export-download",
    ),
]
