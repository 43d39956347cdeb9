"""The staff REST API for erasure (the right to be forgotten):
``POST /api/v1/annotators/{public_id}/erase/`` with the public id typed again as
confirmation. The work is ``annotation.services.annotator_erase``."""

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.decorators import api_view, permission_classes
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response

from annotation import selectors, services
from core.exceptions import InvalidInput, NotFound


class EraseRequestSerializer(serializers.Serializer):
    confirm = serializers.CharField(
        max_length=32,
        help_text=(
            "The annotator's public id again: erasure cannot be undone, so the "
            "request must name the person twice."
        ),
    )
    reason = serializers.CharField(
        max_length=500, required=False, allow_blank=True, default=""
    )

    class Meta:
        ref_name = "AnnotatorEraseRequest"


class EraseResultSerializer(serializers.Serializer):
    public_id = serializers.CharField(
        help_text="The new random id the kept, invalid records are filed under."
    )
    erased_at = serializers.DateTimeField()
    slots_reopened = serializers.IntegerField()

    class Meta:
        ref_name = "AnnotatorEraseResult"


@extend_schema(
    request=EraseRequestSerializer,
    responses={
        200: EraseResultSerializer,
        400: OpenApiResponse(description="Missing or wrong confirmation."),
        404: OpenApiResponse(description="No annotator with this public id."),
    },
    description=(
        "Erase an annotator (docs/integrity.md): exclude them, remove what "
        "identifies them or was derived from their ratings alone, withdraw the "
        "exports of their studies. Their public id changes; the old one is gone."
    ),
)
@api_view(["POST"])
@permission_classes([IsAdminUser])
def annotator_erase(request: Request, public_id: str) -> Response:
    annotator = selectors.annotator_by_public_id(public_id=public_id)
    if annotator is None:
        raise NotFound(f"No annotator {public_id}.")
    ser = EraseRequestSerializer(data=request.data)
    if not isinstance(request.data, dict) or not ser.is_valid():
        raise InvalidInput(
            'Send {"confirm": "<the annotator\'s public id>"} to confirm.'
        )
    if ser.validated_data["confirm"] != public_id:
        raise InvalidInput(
            f"The confirmation does not match: type {public_id} to erase this "
            "annotator."
        )
    reopened = services.annotator_erase(
        annotator_id=annotator.pk,
        reason=ser.validated_data["reason"] or f"API request by {request.user}",
    )
    annotator.refresh_from_db()
    return Response(
        EraseResultSerializer(
            {
                "public_id": annotator.public_id,
                "erased_at": annotator.erased_at,
                "slots_reopened": reopened,
            }
        ).data
    )
