"""REST API for the reward model (staff only). Views parse input and call the
services; nothing here imports torch, not even on a predict (``inference`` is numpy)."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.decorators import api_view, permission_classes
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response

from annotation.studies.models import Study
from core.pagination import PAGE_PARAMETERS, BoundedLimitOffsetPagination, paginated

from .. import selectors, services
from ..models import AnnotatorMetric, ModelVersion, TrainingRun
from .serializers import (
    AnnotatorMetricSerializer,
    ModelVersionSerializer,
    PredictRequestSerializer,
    PredictResponseSerializer,
    TrainingRequestSerializer,
    TrainingRunSerializer,
)

PENDING_RETRY_S = 10


def _paginated(request: Request, queryset, serializer_class) -> Response:
    paginator = BoundedLimitOffsetPagination()
    page = paginator.paginate_queryset(queryset, request)
    return paginator.get_paginated_response(serializer_class(page, many=True).data)


@extend_schema(
    request=TrainingRequestSerializer,
    responses={
        201: TrainingRunSerializer,
        404: OpenApiResponse(description="No such study."),
        409: OpenApiResponse(description="A training run is already running."),
    },
)
@api_view(["POST"])
@permission_classes([IsAdminUser])
def training_create(request: Request) -> Response:
    ser = TrainingRequestSerializer(data=request.data)
    ser.is_valid(raise_exception=True)
    data = ser.validated_data
    study = get_object_or_404(Study, pk=data["study"]) if data.get("study") else None
    run = services.training_run_enqueue(
        study=study,
        trigger=TrainingRun.Trigger.API,
        promote=data["promote"],
        config=data["config"],
        user=request.user,
    )
    return Response(TrainingRunSerializer(run).data, status=status.HTTP_201_CREATED)


@extend_schema(responses=TrainingRunSerializer)
@api_view(["GET"])
@permission_classes([IsAdminUser])
def training_detail(request: Request, run_id: int) -> Response:
    run = get_object_or_404(selectors.training_run_list(), pk=run_id)
    return Response(TrainingRunSerializer(run).data)


_PAGE = PAGE_PARAMETERS


@extend_schema(responses=paginated(ModelVersionSerializer), parameters=_PAGE)
@api_view(["GET"])
@permission_classes([IsAdminUser])
def version_list(request: Request) -> Response:
    return _paginated(request, selectors.version_list(), ModelVersionSerializer)


@extend_schema(
    responses=paginated(AnnotatorMetricSerializer),
    parameters=[
        *_PAGE,
        OpenApiParameter(
            "split",
            str,
            enum=AnnotatorMetric.Split.values,
            description="Only one split.",
        ),
    ],
)
@api_view(["GET"])
@permission_classes([IsAdminUser])
def version_annotators(request: Request, version_id: int) -> Response:
    version = get_object_or_404(ModelVersion, pk=version_id)
    split = request.query_params.get("split") or None
    if split is not None and split not in AnnotatorMetric.Split.values:
        raise ValidationError(
            {"split": [f"One of: {', '.join(AnnotatorMetric.Split.values)}."]}
        )
    rows = selectors.annotator_metrics(version=version, split=split)
    return _paginated(request, rows, AnnotatorMetricSerializer)


@extend_schema(
    request=PredictRequestSerializer,
    responses={
        200: PredictResponseSerializer,
        202: PredictResponseSerializer,
        404: OpenApiResponse(description="No such annotator or model version."),
        409: OpenApiResponse(description="No model version to predict with yet."),
    },
)
@api_view(["POST"])
@permission_classes([IsAdminUser])
def predict(request: Request) -> Response:
    from .. import inference

    ser = PredictRequestSerializer(data=request.data)
    ser.is_valid(raise_exception=True)
    data = ser.validated_data
    annotator = inference.annotator_get(data["annotator"])
    version = (
        get_object_or_404(ModelVersion, pk=data["version"])
        if data.get("version")
        else None
    )
    result = inference.predict(
        annotator=annotator, image_ids=data["images"], version=version
    )
    ranking = sorted(result["scores"], key=lambda i: -result["scores"][i])
    body = {
        **result,
        "scores": {str(k): v for k, v in result["scores"].items()},
        "ranking": ranking,
    }
    if not result["pending"]:
        return Response(body)
    # Not embedded yet: queue them (a worker embeds; torch stays out of this
    # process) and answer 202 with what is ready; the same POST again later
    # returns every score.
    services.embeddings_enqueue(
        image_ids=result["pending"], backbone=result["backbone"]
    )
    body["detail"] = (
        f"{len(result['pending'])} image(s) are being embedded; "
        f"repeat this request in about {PENDING_RETRY_S} s."
    )
    body["retry_after"] = PENDING_RETRY_S
    return Response(
        body,
        status=status.HTTP_202_ACCEPTED,
        headers={"Retry-After": str(PENDING_RETRY_S)},
    )
