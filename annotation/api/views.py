"""REST API v1 for studies, images, assignments, ratings and progress.

Views only parse input and call ``annotation.services`` / ``selectors``; the
services raise ``PalateError``s that ``errors.exception_handler`` renders.
"""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.decorators import api_view, parser_classes, permission_classes
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import IsAdminUser, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from annotation import selectors, services
from annotation.models import Study

from .serializers import (
    AssignmentSerializer,
    ImageSerializer,
    ImageUploadSerializer,
    ProgressSerializer,
    RatingInputSerializer,
    RatingSerializer,
    StudyPublicSerializer,
    StudySerializer,
)


@extend_schema(
    methods=["GET"],
    responses=StudyPublicSerializer(many=True),
    description=(
        "The studies the caller may see: staff every study, an annotator those "
        "they joined. Annotators get these fields; staff get the full study "
        "(every field of Study) in each row."
    ),
)
@extend_schema(
    methods=["POST"], request=StudySerializer, responses={201: StudySerializer}
)
@api_view(["GET", "POST"])
@permission_classes([IsAuthenticated])
def study_list(request: Request) -> Response:
    if request.method == "GET":
        studies = selectors.study_list_for(user=request.user)
        cls = StudySerializer if request.user.is_staff else StudyPublicSerializer
        return Response(cls(studies, many=True).data)
    if not request.user.is_staff:
        return Response(
            {"detail": "Only staff can create studies.", "code": "forbidden"},
            status=status.HTTP_403_FORBIDDEN,
        )
    serializer = StudySerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    data = dict(serializer.validated_data)
    study = services.study_create(
        name=data.pop("name"), slug=data.pop("slug"), created_by=request.user, **data
    )
    return Response(StudySerializer(study).data, status=status.HTTP_201_CREATED)


@extend_schema(
    request={"multipart/form-data": ImageUploadSerializer},
    responses={201: ImageSerializer},
)
@api_view(["POST"])
@permission_classes([IsAdminUser])
@parser_classes([MultiPartParser, FormParser])
def image_upload(request: Request, study_id: int) -> Response:
    study = get_object_or_404(Study, pk=study_id)
    serializer = ImageUploadSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    upload = serializer.validated_data["file"]
    image = services.image_create(
        study=study,
        data=upload.read(),
        filename=upload.name,
        prompt=serializer.validated_data["prompt"],
        domain=serializer.validated_data["domain"],
        provenance=serializer.validated_data["provenance"],
    )
    return Response(
        ImageSerializer(image, context={"request": request}).data,
        status=status.HTTP_201_CREATED,
    )


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


@extend_schema(responses=ProgressSerializer)
@api_view(["GET"])
@permission_classes([IsAdminUser])
def study_progress(request: Request, study_id: int) -> Response:
    study = get_object_or_404(Study, pk=study_id)
    return Response(selectors.study_progress(study=study))
