from rest_framework import serializers

from core.validation import BIGINT_MAX, validate_json_object

from ..models import AnnotatorMetric, ModelVersion, TrainingRun

# What a training run's ``config`` may set: the seed, the backbone and the k
# values of the few-shot curve (every model hyper-parameter is chosen on the
# validation split, not set by hand). Anything else is refused by name rather
# than stored and ignored.
_NUMBER = (int, float)
CONFIG_FIELDS = {
    "seed": (int, 0, 2**32 - 1),
}


def _config_item_problem(key, value) -> str | None:
    if key == "backbone":
        ok = isinstance(value, str) and 0 < len(value) <= 200 and "\x00" not in value
        return None if ok else "a backbone key (text, at most 200 characters)"
    if key == "ks":
        ok = (
            isinstance(value, list)
            and 0 < len(value) <= 20
            and all(type(k) is int and 0 <= k <= 10_000 for k in value)
        )
        return None if ok else "a list of 1 to 20 whole numbers 0..10000"
    kind, low, high = CONFIG_FIELDS[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        return f"a {'whole number' if kind is int else 'number'} {low}..{high}"
    return None if low <= value <= high else f"between {low} and {high}"


def validate_training_config(value) -> None:
    validate_json_object(value)
    known = {*CONFIG_FIELDS, "backbone", "ks"}
    unknown = sorted(set(value) - known)
    if unknown:
        raise serializers.ValidationError(
            f"Unknown setting(s): {', '.join(unknown)}. "
            f"Known: {', '.join(sorted(known))}."
        )
    problems = [
        f"{key} must be {problem}"
        for key, item in value.items()
        if (problem := _config_item_problem(key, item))
    ]
    if problems:
        raise serializers.ValidationError("; ".join(problems) + ".")


class TrainingRequestSerializer(serializers.Serializer):
    study = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=BIGINT_MAX
    )
    promote = serializers.ChoiceField(
        choices=TrainingRun.Promote.choices, default="auto"
    )
    config = serializers.DictField(
        required=False, default=dict, validators=[validate_training_config]
    )


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
            "comparison",
            "created_at",
            "started_at",
            "finished_at",
        ]

    def get_version(self, obj) -> int | None:
        version = getattr(obj, "version", None)
        return version.pk if version else None


class HeldOutFigureSerializer(serializers.Serializer):
    split = serializers.CharField(help_text="test_seen: known annotators, new images")
    mean = serializers.FloatField(help_text="mean per-annotator pairwise accuracy")
    ci95 = serializers.ListField(
        child=serializers.FloatField(),
        allow_null=True,
        help_text="95% interval over annotators (normal approximation)",
    )
    n_annotators = serializers.IntegerField(allow_null=True)


class ModelVersionSerializer(serializers.ModelSerializer):
    test_pairwise_accuracy = HeldOutFigureSerializer(
        source="test_accuracy",
        read_only=True,
        allow_null=True,
        help_text="The held-out figure: pairwise accuracy on the test split "
        "(null when too few held-out ratings).",
    )
    promotion_comparison = serializers.JSONField(
        source="training_run.comparison",
        read_only=True,
        default=dict,
        help_text="This version against the version active when it was trained, "
        "on the same held-out ratings (what automatic promotion decided on).",
    )

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
            "test_pairwise_accuracy",
            "promotion_comparison",
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
            "mae_ci_low",
            "mae_ci_high",
            "baselines",
        ]


class PredictRequestSerializer(serializers.Serializer):
    annotator = serializers.IntegerField(min_value=1, max_value=BIGINT_MAX)
    images = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=BIGINT_MAX),
        min_length=1,
        max_length=10_000,
    )
    version = serializers.IntegerField(
        required=False, min_value=1, max_value=BIGINT_MAX
    )


class PredictResponseSerializer(serializers.Serializer):
    version = serializers.IntegerField()
    annotator = serializers.IntegerField()
    backbone = serializers.CharField()
    how = serializers.CharField()
    scores = serializers.DictField(child=serializers.FloatField())
    ranking = serializers.ListField(child=serializers.IntegerField())
    pending = serializers.ListField(
        child=serializers.IntegerField(),
        help_text="Images without an embedding yet (202): queued; ask again later.",
    )
    retry_after = serializers.IntegerField(required=False)
    detail = serializers.CharField(required=False)
