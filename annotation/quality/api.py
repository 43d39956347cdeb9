"""REST API for quality control (staff only): a study's attention checks, its QC
settings, and each annotator's QC results.

Views parse input and call ``annotation.quality.services.quality``; errors are
``{"detail", "code"}`` (``core.api_errors``). Staff sign in with a session or a
token; an annotator's token is refused (403) like any staff endpoint's.
"""

from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.decorators import api_view, parser_classes, permission_classes
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response

from annotation import selectors, services
from annotation.models import AnnotatorQuality, AttentionCheck, QualityConfig, Study
from annotation.quality.services.quality import FLAG_LABELS, pair_corr, time_median_ms
from core.exceptions import InvalidInput, NotFound
from core.pagination import (
    PAGE_PARAMETERS,
    BoundedLimitOffsetPagination,
    paginated,
    query_bool,
)

_ERROR = OpenApiResponse(description="Refused: {detail, code}; nothing changed.")
_PAGE = PAGE_PARAMETERS


# --- serializers ------------------------------------------------------------------


class AttentionCheckSerializer(serializers.ModelSerializer):
    image_url = serializers.SerializerMethodField()

    class Meta:
        model = AttentionCheck
        fields = [
            "id",
            "study",
            "image_url",
            "width",
            "height",
            "sha256",
            "instruction",
            "expected_min",
            "expected_max",
            "is_active",
            "created_at",
        ]
        read_only_fields = fields

    def get_image_url(self, obj: AttentionCheck) -> str:
        request = self.context.get("request")
        return request.build_absolute_uri(obj.file.url) if request else obj.file.url


class AttentionCheckRemovalSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    result = serializers.ChoiceField(
        ["deleted", "retired"],
        help_text="deleted: nobody was dealt it; retired: kept, never dealt again.",
    )


class AttentionCheckUploadSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="PNG, JPEG or WebP.")
    expected_min = serializers.IntegerField(
        min_value=-32768,
        max_value=32767,
        help_text="Lowest answer that passes (on the study's scale).",
    )
    expected_max = serializers.IntegerField(
        min_value=-32768,
        max_value=32767,
        required=False,
        help_text="Highest answer that passes; default: expected_min.",
    )
    instruction = serializers.CharField(
        max_length=300,
        required=False,
        allow_blank=True,
        default="",
        help_text=(
            "A note for staff; never shown to annotators (the request, e.g. "
            '"Please press 2", must be in the image itself).'
        ),
    )


class QualityConfigSerializer(serializers.ModelSerializer):
    """Every setting; a PATCH may send any subset. The ranges (shares and rates
    0..1, correlations -1..1, the counts' minimums) come from the model fields'
    validators, which DRF turns into min_value / max_value."""

    class Meta:
        model = QualityConfig
        exclude = ["id", "study"]
        extra_kwargs = {"too_fast_ms": {"max_value": 3_600_000}}


class AnnotatorQualitySerializer(serializers.Serializer):
    """One annotator's quality-control results in the study (running statistics,
    as of their last rating or answer)."""

    annotator = serializers.IntegerField(source="annotator_id")
    annotator_public_id = serializers.CharField(source="annotator.public_id")
    annotator_status = serializers.CharField(source="annotator.status")
    ratings = serializers.IntegerField(source="n_ratings")
    too_fast_share = serializers.SerializerMethodField()
    median_time_ms = serializers.SerializerMethodField()
    longest_identical_run = serializers.IntegerField(source="max_run")
    checks_answered = serializers.IntegerField(source="checks_total")
    checks_passed = serializers.SerializerMethodField()
    checks_failed = serializers.IntegerField()
    agreement_n = serializers.SerializerMethodField(
        help_text="Ratings compared with the mean of the image's earlier raters."
    )
    agreement = serializers.SerializerMethodField(
        help_text="Correlation with the mean of the image's earlier raters."
    )
    retest_pairs = serializers.SerializerMethodField(
        help_text="Repeats answered (first score, repeat)."
    )
    retest_reliability = serializers.SerializerMethodField(
        help_text="Test-retest: correlation of first score and repeat."
    )
    retest_mean_abs_diff = serializers.SerializerMethodField()
    flags = serializers.ListField(child=serializers.ChoiceField(list(FLAG_LABELS)))
    updated_at = serializers.DateTimeField()

    def get_too_fast_share(self, q: AnnotatorQuality) -> float | None:
        return q.n_fast / q.n_ratings if q.n_ratings else None

    def get_median_time_ms(self, q: AnnotatorQuality) -> float | None:
        return time_median_ms(q.time_hist)

    def get_checks_passed(self, q: AnnotatorQuality) -> int:
        return q.checks_total - q.checks_failed

    def get_agreement_n(self, q: AnnotatorQuality) -> int:
        return int((q.loo_sums or [0])[0])

    def get_agreement(self, q: AnnotatorQuality) -> float | None:
        return pair_corr(q.loo_sums or [])

    def get_retest_pairs(self, q: AnnotatorQuality) -> int:
        return int((q.retest_sums or [0])[0])

    def get_retest_reliability(self, q: AnnotatorQuality) -> float | None:
        return pair_corr(q.retest_sums or [])

    def get_retest_mean_abs_diff(self, q: AnnotatorQuality) -> float | None:
        n = self.get_retest_pairs(q)
        return q.retest_abs_diff / n if n else None


# --- helpers ----------------------------------------------------------------------


def _study(study_id: int) -> Study:
    study = Study.objects.filter(pk=study_id).first()
    if study is None:
        raise NotFound(f"No study {study_id}.")
    return study


def _check(study: Study, check_id: int) -> AttentionCheck:
    check = AttentionCheck.objects.filter(pk=check_id, study=study).first()
    if check is None:
        raise NotFound(f"No attention check {check_id} in this study.")
    return check


def _valid(serializer: serializers.Serializer) -> dict:
    if not serializer.is_valid():
        field, messages = next(iter(serializer.errors.items()))
        message = messages[0] if isinstance(messages, list) else messages
        raise InvalidInput(
            f"{field}: {message}" if field != "non_field_errors" else str(message)
        )
    return serializer.validated_data


def _unknown_fields(request: Request, allowed) -> None:
    if not hasattr(request.data, "keys"):
        raise InvalidInput("Send an object of settings.")
    unknown = sorted(set(request.data.keys()) - set(allowed))
    if unknown:
        raise InvalidInput(
            f"Unknown setting(s): {', '.join(unknown)}. "
            f"Known: {', '.join(sorted(allowed))}."
        )


def _page(request: Request, rows, serializer_class) -> Response:
    paginator = BoundedLimitOffsetPagination()
    page = paginator.paginate_queryset(rows, request)
    data = serializer_class(page, many=True, context={"request": request}).data
    return paginator.get_paginated_response(data)


# --- attention checks -------------------------------------------------------------


@extend_schema(
    methods=["GET"],
    parameters=[
        *_PAGE,
        OpenApiParameter(
            "retired", bool, description="Include retired checks (default: no)."
        ),
    ],
    responses={200: paginated(AttentionCheckSerializer), 400: _ERROR},
    operation_id="studies_attention_checks_list",
    description="The study's attention checks, newest first.",
)
@extend_schema(
    methods=["POST"],
    request={"multipart/form-data": AttentionCheckUploadSerializer},
    responses={201: AttentionCheckSerializer, 400: _ERROR},
    description=(
        "Add an attention check: an image with the answers that pass it. It is "
        "dealt into annotators' streams at the study's attention_check_rate, never "
        "counted toward an image's ratings, never in training or export."
    ),
)
@api_view(["GET", "POST"])
@permission_classes([IsAdminUser])
@parser_classes([MultiPartParser, FormParser])
def attention_check_list(request: Request, study_id: int) -> Response:
    study = _study(study_id)
    if request.method == "GET":
        checks = AttentionCheck.objects.filter(study=study).order_by("-pk")
        if not query_bool(request, "retired"):
            checks = checks.filter(is_active=True)
        return _page(request, checks, AttentionCheckSerializer)
    data = _valid(AttentionCheckUploadSerializer(data=request.data))
    upload = data["file"]
    check = services.attention_check_create(
        study=study,
        data=upload.read(),
        expected_min=data["expected_min"],
        expected_max=data.get("expected_max"),
        instruction=data["instruction"],
        filename=upload.name or "check",
        user=request.user,
    )
    return Response(
        AttentionCheckSerializer(check, context={"request": request}).data,
        status=status.HTTP_201_CREATED,
        headers={"Location": reverse("api-attention-check", args=[study.pk, check.pk])},
    )


@extend_schema(
    methods=["GET"],
    responses={200: AttentionCheckSerializer, 404: _ERROR},
    operation_id="studies_attention_check_retrieve",
)
@extend_schema(
    methods=["DELETE"],
    responses={200: AttentionCheckRemovalSerializer, 404: _ERROR},
    description=(
        "Take the check out of the study: it is deleted (with its file) if nobody "
        "was dealt it; otherwise it is retired (kept so past passes and failures "
        "stay explainable, never dealt again) and its items not yet shown are "
        "withdrawn."
    ),
)
@api_view(["GET", "DELETE"])
@permission_classes([IsAdminUser])
def attention_check_detail(request: Request, study_id: int, check_id: int) -> Response:
    study = _study(study_id)
    if request.method == "GET":
        body = AttentionCheckSerializer(
            _check(study, check_id), context={"request": request}
        )
        return Response(body.data)
    deleted = services.attention_check_remove(study=study, check_id=check_id)
    return Response({"id": check_id, "result": "deleted" if deleted else "retired"})


# --- settings ---------------------------------------------------------------------


@extend_schema(methods=["GET"], responses=QualityConfigSerializer)
@extend_schema(
    methods=["PATCH"],
    request=QualityConfigSerializer(partial=True),
    responses={200: QualityConfigSerializer, 400: _ERROR},
    description=(
        "Change some settings; the others keep their values. An unknown name or a "
        "value out of range is refused (400) and nothing is changed."
    ),
)
@api_view(["GET", "PATCH"])
@permission_classes([IsAdminUser])
@parser_classes([JSONParser, FormParser])
def quality_config(request: Request, study_id: int) -> Response:
    study = _study(study_id)
    config = services.quality_config_get(study=study)
    if request.method == "GET":
        return Response(QualityConfigSerializer(config).data)
    _unknown_fields(request, QualityConfigSerializer().fields)
    data = _valid(QualityConfigSerializer(config, data=request.data, partial=True))
    config = services.quality_config_update(study=study, **data)
    return Response(QualityConfigSerializer(config).data)


# --- results ----------------------------------------------------------------------


@extend_schema(
    parameters=[
        *_PAGE,
        OpenApiParameter(
            "flag",
            str,
            enum=list(FLAG_LABELS),
            description="Only those with this flag.",
        ),
    ],
    responses={200: paginated(AnnotatorQualitySerializer), 400: _ERROR},
    description=(
        "Each annotator's quality-control results in the study (attention checks "
        "passed and failed, test-retest reliability from repeats, agreement with "
        "the other raters, speed, flags), in annotator order."
    ),
)
@api_view(["GET"])
@permission_classes([IsAdminUser])
def quality_annotators(request: Request, study_id: int) -> Response:
    study = _study(study_id)
    flag = request.query_params.get("flag") or ""
    if flag and flag not in FLAG_LABELS:
        raise InvalidInput(f"flag: one of {', '.join(FLAG_LABELS)}.")
    rows = selectors.study_quality_rows(study=study, flag=flag)
    return _page(request, rows, AnnotatorQualitySerializer)
