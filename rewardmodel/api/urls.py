from django.urls import path

from . import views

urlpatterns = [
    path(
        "rewardmodel/trainings/", views.training_create, name="api-rm-training-create"
    ),
    path(
        "rewardmodel/trainings/<int:run_id>/",
        views.training_detail,
        name="api-rm-training",
    ),
    path("rewardmodel/versions/", views.version_list, name="api-rm-versions"),
    path(
        "rewardmodel/versions/<int:version_id>/annotators/",
        views.version_annotators,
        name="api-rm-version-annotators",
    ),
    path("rewardmodel/predict/", views.predict, name="api-rm-predict"),
]
