"""REST API v1 for assignments and ratings: claim, rate, skip (the DRF views the
hot endpoints in ``annotation.engine.api.hot`` fall back to).

Views only parse input and call ``annotation.services`` / ``selectors``; the
services raise ``PalateError``s that ``errors.exception_handler`` renders.
"""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.decorators import api_view, parser_classes, permission_classes
from rest_framework.parsers import FormParser, JSONParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from annotation import services
from annotation.api.serializers import (
    AssignmentSerializer,
    RatingInputSerializer,
    RatingSerializer,
)
from annotation.models import Study

_ITEM_ID = OpenApiParameter(
    "token",
    str,
    OpenApiParameter.PATH,
    description="The `id` of an item dealt by `assignments/next/` (opaque).",
)


@extend_schema(
    request=None,
    responses={
        200: AssignmentSerializer,
        204: OpenApiResponse(description="Nothing left for this annotator."),
    },
    description=(
        "The next image for the caller to rate, held for them for the study's "
        "lease time; asking again returns the same one until it is rated or "
        "skipped. Like the rating page, the stream includes a few uncounted "
        "images (quality control, blind comparisons), dealt and answered like "
        "every other."
    ),
)
@api_view(["POST"])
@permission_classes([IsAuthenticated])
def assignment_next(request: Request, study_id: int) -> Response:
    study = get_object_or_404(Study, pk=study_id)
    annotator = services.annotator_get_or_create_for_user(request.user)
    shown = services.item_next(annotator=annotator, study=study)
    if shown is None:
        return Response(status=status.HTTP_204_NO_CONTENT)
    return Response(AssignmentSerializer(shown, context={"request": request}).data)


@extend_schema(
    request=RatingInputSerializer,
    parameters=[_ITEM_ID],
    responses={
        201: RatingSerializer,
        200: RatingSerializer,
        409: OpenApiResponse(description="Rated differently before, skipped, or full."),
    },
)
@api_view(["POST"])
@permission_classes([IsAuthenticated])
@parser_classes([JSONParser, FormParser])
def rating_create(request: Request, token: str) -> Response:
    serializer = RatingInputSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    annotator = services.annotator_get_or_create_for_user(request.user)
    answer = services.item_answer(
        token=token, annotator=annotator, score=serializer.validated_data["score"]
    )
    return Response(
        RatingSerializer(answer).data,
        status=status.HTTP_201_CREATED if answer.created else status.HTTP_200_OK,
    )


@extend_schema(
    request=None, parameters=[_ITEM_ID], responses={200: AssignmentSerializer}
)
@api_view(["POST"])
@permission_classes([IsAuthenticated])
def assignment_skip(request: Request, token: str) -> Response:
    annotator = services.annotator_get_or_create_for_user(request.user)
    shown = services.item_skip(token=token, annotator=annotator)
    return Response(AssignmentSerializer(shown, context={"request": request}).data)
