from rest_framework import serializers

from core.validation import BIGINT_MAX, validate_json_object

from ..models import (
    MAX_SEEDS_PER_JOB,
    PROMPT_MAX_CHARS,
    SEED_MAX,
    GenerationItem,
    GenerationJob,
)


class JobCreateSerializer(serializers.Serializer):
    """Either an existing ``prompt`` id, or ``study`` + ``text`` (the prompt is
    created, or reused when the study already has it)."""

    prompt = serializers.IntegerField(required=False, min_value=1, max_value=BIGINT_MAX)
    study = serializers.IntegerField(required=False, min_value=1, max_value=BIGINT_MAX)
    text = serializers.CharField(
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        max_length=PROMPT_MAX_CHARS * 2,
    )
    domain = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=60
    )
    tags = serializers.ListField(
        child=serializers.CharField(max_length=60),
        required=False,
        default=list,
        max_length=50,
    )
    negative_prompt = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=PROMPT_MAX_CHARS
    )
    backend = serializers.CharField(max_length=40)
    model = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=200
    )
    n_seeds = serializers.IntegerField(min_value=1, max_value=MAX_SEEDS_PER_JOB)
    params = serializers.DictField(
        required=False, default=dict, validators=[validate_json_object]
    )
    seed_start = serializers.IntegerField(
        required=False,
        allow_null=True,
        default=None,
        min_value=0,
        max_value=SEED_MAX - MAX_SEEDS_PER_JOB,
        help_text="First seed (seeds are 32-bit); default: after the last one used.",
    )

    def validate(self, data):
        if data.get("prompt") is None and (
            data.get("study") is None or "text" not in data
        ):
            raise serializers.ValidationError(
                "Give either 'prompt' (an id) or 'study' and 'text'."
            )
        return data


class ItemSerializer(serializers.ModelSerializer):
    image_url = serializers.SerializerMethodField()

    class Meta:
        model = GenerationItem
        fields = [
            "id",
            "seed",
            "status",
            "image",
            "image_url",
            "error",
            "attempts",
            "duration_ms",
            "started_at",
            "finished_at",
        ]

    def get_image_url(self, item) -> str | None:
        if not item.image_id:
            return None
        request = self.context.get("request")
        url = item.image.file.url
        return request.build_absolute_uri(url) if request else url


class JobSerializer(serializers.ModelSerializer):
    prompt_text = serializers.CharField(source="prompt.text", read_only=True)
    model = serializers.CharField(source="model_name", read_only=True)
    n_finished = serializers.IntegerField(read_only=True)
    items = ItemSerializer(many=True, read_only=True)

    class Meta:
        model = GenerationJob
        fields = [
            "id",
            "study",
            "prompt",
            "prompt_text",
            "backend",
            "model",
            "params",
            "n_seeds",
            "seed_start",
            "status",
            "error",
            "n_done",
            "n_failed",
            "n_cancelled",
            "n_finished",
            "created_at",
            "started_at",
            "finished_at",
            "items",
        ]
