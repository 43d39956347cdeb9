from django.urls import reverse
from rest_framework import serializers

from annotation.models import Image, Study
from core.validation import validate_json_object


class StudySerializer(serializers.ModelSerializer):
    image_count = serializers.IntegerField(read_only=True, source="images.count")

    class Meta:
        model = Study
        fields = [
            "id",
            "name",
            "slug",
            "description",
            "instructions",
            "consent_text",
            "scale_min",
            "scale_max",
            "scale_labels",
            "raters_per_image",
            "quota_per_annotator",
            "lease_seconds",
            "completion_url",
            "completion_code",
            "language",
            "demographics_fields",
            "dealing_policy",
            "dealing_warmup",
            "dealing_band",
            "status",
            "created_at",
            "image_count",
        ]
        read_only_fields = ["id", "created_at", "image_count"]


class StudyPublicSerializer(serializers.ModelSerializer):
    """What an annotator may see of a study (no completion code)."""

    class Meta:
        model = Study
        fields = [
            "id",
            "name",
            "slug",
            "instructions",
            "scale_min",
            "scale_max",
            "scale_labels",
            "status",
        ]


class ImageSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()

    class Meta:
        model = Image
        fields = [
            "id",
            "study",
            "url",
            "sha256",
            "width",
            "height",
            "format",
            "prompt",
            "domain",
            "provenance",
            "target_ratings",
            "rating_count",
            "lease_count",
            "open_slots",
            "created_at",
        ]

    def get_url(self, image) -> str:
        request = self.context.get("request")
        url = image.file.url
        return request.build_absolute_uri(url) if request else url


class ImageUploadSerializer(serializers.Serializer):
    file = serializers.FileField()
    prompt = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=20_000
    )
    domain = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=60
    )
    provenance = serializers.JSONField(
        required=False,
        default=dict,
        validators=[validate_json_object],
        help_text="A JSON object (where the image came from); no NUL characters.",
    )


class AssignmentSerializer(serializers.Serializer):
    """One image to rate, as ``annotation.engine.services.items.Shown`` holds it.
    Every item an annotator is dealt has these fields, whatever it is for: the
    platform mixes a few uncounted images into everyone's stream (attention
    checks, an image shown again later, blind comparisons), and nothing here says
    which."""

    id = serializers.CharField(
        source="token",
        help_text="Opaque name of this item: POST its rating or skip under it.",
    )
    study = serializers.IntegerField(source="study_id")
    image_url = serializers.SerializerMethodField(
        help_text="The picture; an opaque name under /media/i/, new for each item."
    )
    image_width = serializers.IntegerField(source="width")
    image_height = serializers.IntegerField(source="height")
    status = serializers.ChoiceField(choices=["leased", "submitted", "skipped"])
    leased_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()

    def get_image_url(self, shown) -> str:
        return self.context["request"].build_absolute_uri(
            reverse("media_item", args=[shown.media_token])
        )


class RatingInputSerializer(serializers.Serializer):
    # Any study's scale lies within -100..100 (the study's own range is checked
    # by the engine, with a message naming it).
    score = serializers.IntegerField(min_value=-100, max_value=100)


class RatingSerializer(serializers.Serializer):
    """The score recorded for one item (``annotation.engine.services.items.Answer``)."""

    assignment = serializers.CharField(source="token", help_text="The item's id.")
    study = serializers.IntegerField(source="study_id")
    score = serializers.IntegerField()
    time_on_item_ms = serializers.IntegerField(allow_null=True)
    created_at = serializers.DateTimeField()


class NextErrorSerializer(serializers.Serializer):
    """Why rate-and-next dealt nothing although the rating was recorded: the
    error the claim would have answered on its own (``status`` its HTTP status)."""

    detail = serializers.CharField()
    code = serializers.CharField()
    status = serializers.IntegerField()


class RatingNextSerializer(RatingSerializer):
    """The rating, and with ``?next=1`` the next item as ``assignments/next/``
    answers it."""

    next = AssignmentSerializer(
        allow_null=True,
        required=False,
        help_text="With ?next=1 only: the next item as assignments/next/ answers "
        "it (the lease the caller holds now, if any); null when nothing is left "
        "(the claim's 204) or when the claim was refused (next_error).",
    )
    next_error = NextErrorSerializer(
        required=False,
        help_text="With ?next=1, only when the claim was refused after the rating "
        "was recorded (e.g. the account was paused by this rating): the error "
        "assignments/next/ would have answered.",
    )


class ProgressSerializer(serializers.Serializer):
    study = serializers.IntegerField()
    images = serializers.IntegerField()
    images_complete = serializers.IntegerField()
    ratings = serializers.IntegerField()
    ratings_target = serializers.IntegerField()
    fraction_complete = serializers.FloatField()
    ratings_last_hour = serializers.IntegerField(
        help_text="Valid ratings collected here in the last hour (imported ratings "
        "keep their dataset's times and are not counted)."
    )
    images_by_rating_count = serializers.DictField(child=serializers.IntegerField())
    annotators = serializers.IntegerField()
