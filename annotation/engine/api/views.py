"""REST API v1 for assignments and ratings: claim, rate, skip (the DRF views the
hot endpoints in ``annotation.engine.api.hot`` fall back to).

Views only parse input and call ``annotation.services`` / ``selectors``; the
services raise ``PalateError``s that ``core.api_errors.exception_handler``
renders.
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
    RatingNextSerializer,
    RatingSerializer,
)
from annotation.models import Study
from core.exceptions import InvalidInput, PalateError

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


_NEXT = OpenApiParameter(
    "next",
    int,
    OpenApiParameter.QUERY,
    enum=[0, 1],
    required=False,
    description=(
        "1: rate and take the next in one request. The rating is recorded "
        "exactly as without it (same statuses and errors; a refused rating "
        "claims nothing), then the caller's next item in the same study is "
        "claimed as `POST /studies/{id}/assignments/next/` would claim it and "
        "answered under `next` (null when nothing is left, the claim's 204). "
        "A repeated rating (200) answers the item the caller would get now: "
        "the lease they hold, or a new one. When the claim is refused after "
        "the rating was recorded, `next` is null and `next_error` holds the "
        "claim's error. Absent or 0: the rating alone."
    ),
)


def next_wanted(query) -> bool:
    """Whether a rating request asks for the next item too (``?next=1``); any
    value but 0 or 1 is refused before anything is recorded."""
    values = query.getlist("next")
    if not values or values == ["0"]:
        return False
    if values == ["1"]:
        return True
    raise InvalidInput("next must be 0 or 1.")


def next_error_data(exc: PalateError) -> dict:
    """The claim's refusal as its own request would have answered it."""
    return {"detail": exc.message, "code": exc.code, "status": exc.http_status}


@extend_schema(
    request=RatingInputSerializer,
    parameters=[_ITEM_ID, _NEXT],
    responses={
        201: RatingNextSerializer,
        200: RatingNextSerializer,
        409: OpenApiResponse(description="Rated differently before, skipped, or full."),
    },
    description=(
        "Record a score for an item. With `?next=1`, also claim and answer the "
        "caller's next item in the study (`next`, `next_error`): one request "
        "per rating instead of two."
    ),
)
@api_view(["POST"])
@permission_classes([IsAuthenticated])
@parser_classes([JSONParser, FormParser])
def rating_create(request: Request, token: str) -> Response:
    chain = next_wanted(request.query_params)
    serializer = RatingInputSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    annotator = services.annotator_get_or_create_for_user(request.user)
    answer = services.item_answer(
        token=token, annotator=annotator, score=serializer.validated_data["score"]
    )
    data = RatingSerializer(answer).data
    if chain:
        shown, error = services.item_next_after_answer(
            annotator=annotator, study_id=answer.study_id
        )
        context = {"request": request}
        data["next"] = (
            AssignmentSerializer(shown, context=context).data if shown else None
        )
        if error is not None:
            data["next_error"] = next_error_data(error)
    return Response(
        data,
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
