from rest_framework import serializers

from ..models import AnnotatorMetric, ModelVersion, TrainingRun


class TrainingRequestSerializer(serializers.Serializer):
    study = serializers.IntegerField(required=False, allow_null=True)
    promote = serializers.ChoiceField(
        choices=TrainingRun.Promote.choices, default="auto"
    )
    config = serializers.DictField(required=False, default=dict)


class TrainingRunSerializer(serializers.ModelSerializer):
    version = serializers.SerializerMethodField()

    class Meta:
        model = TrainingRun
        fields = [
            "id",
            "study",
            "status",
            "trigger",
            "promote",
            "config",
            "progress",
            "stage",
            "error",
            "version",
            "created_at",
            "started_at",
            "finished_at",
        ]

    def get_version(self, obj) -> int | None:
        version = getattr(obj, "version", None)
        return version.pk if version else None


class ModelVersionSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelVersion
        fields = [
            "id",
            "training_run",
            "study",
            "status",
            "is_active",
            "backbone",
            "weights_loaded",
            "backbone_warning",
            "config",
            "data_counts",
            "metrics",
            "primary_metric",
            "checkpoint_path",
            "checkpoint_sha256",
            "duration_s",
            "promotion_reason",
            "promoted_at",
            "created_at",
        ]


class AnnotatorMetricSerializer(serializers.ModelSerializer):
    annotator_public_id = serializers.CharField(
        source="annotator.public_id", default=None
    )

    class Meta:
        model = AnnotatorMetric
        fields = [
            "annotator",
            "annotator_public_id",
            "split",
            "k",
            "n_test",
            "pairwise_accuracy",
            "spearman",
            "pearson",
            "mae",
            "baselines",
        ]


class PredictRequestSerializer(serializers.Serializer):
    annotator = serializers.IntegerField()
    images = serializers.ListField(
        child=serializers.IntegerField(), min_length=1, max_length=10_000
    )
    version = serializers.IntegerField(required=False)


class PredictResponseSerializer(serializers.Serializer):
    version = serializers.IntegerField()
    annotator = serializers.IntegerField()
    how = serializers.CharField()
    scores = serializers.DictField(child=serializers.FloatField())
    ranking = serializers.ListField(child=serializers.IntegerField())
