"""REST API v1 for studies: the study list, image upload and a study's progress.

Views only parse input and call ``annotation.services`` / ``selectors``; the
services raise ``PalateError``s that the API error handler renders.
"""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.decorators import api_view, parser_classes, permission_classes
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import IsAdminUser, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from annotation import selectors, services
from annotation.api.serializers import (
    ImageSerializer,
    ImageUploadSerializer,
    ProgressSerializer,
    StudyPublicSerializer,
    StudySerializer,
)
from annotation.models import Study


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


@extend_schema(responses=ProgressSerializer)
@api_view(["GET"])
@permission_classes([IsAdminUser])
def study_progress(request: Request, study_id: int) -> Response:
    study = get_object_or_404(Study, pk=study_id)
    return Response(selectors.study_progress(study=study))
