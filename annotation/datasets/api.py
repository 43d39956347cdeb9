"""REST API for dataset exports (staff only).

Creating an export only queues it: the worker writes the dataset (never the web
request), the client polls ``GET /exports/{id}/`` and downloads the archive when
``status`` is ``succeeded``.
"""

from django.http import FileResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.decorators import api_view, parser_classes, permission_classes
from rest_framework.parsers import JSONParser
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response

from annotation import selectors
from annotation.datasets.services import export_jobs
from annotation.models import Export, Study
from core.exceptions import InvalidInput, NotFound


class ExportRequestSerializer(serializers.Serializer):
    format = serializers.ChoiceField(choices=Export.Format.choices, default="parquet")
    images = serializers.ChoiceField(
        choices=Export.Images.choices,
        required=False,
        help_text="Default: embed for Parquet, path for JSONL and CSV.",
    )
    include_excluded = serializers.BooleanField(default=False)
    include_invalid = serializers.BooleanField(default=False)


class ExportSerializer(serializers.ModelSerializer):
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = Export
        fields = [
            "id",
            "study",
            "status",
            "format",
            "images",
            "include_excluded",
            "include_invalid",
            "stage",
            "progress",
            "size_bytes",
            "report",
            "error",
            "created_at",
            "started_at",
            "finished_at",
            "withdrawn_at",
            "withdrawn_reason",
            "download_url",
        ]
        read_only_fields = fields

    def get_download_url(self, obj: Export) -> str | None:
        if obj.status != Export.Status.SUCCEEDED or obj.withdrawn_at is not None:
            return None
        url = reverse("api-export-download", args=[obj.pk])
        request = self.context.get("request")
        return request.build_absolute_uri(url) if request else url


def _study(study_id: int) -> Study:
    try:
        return Study.objects.get(pk=study_id)
    except Study.DoesNotExist:
        raise NotFound(f"No study {study_id}.") from None


def _export(export_id: int) -> Export:
    try:
        return selectors.export_list().get(pk=export_id)
    except Export.DoesNotExist:
        raise NotFound(f"No export {export_id}.") from None


def _first_error(errors: dict) -> str:
    field, messages = next(iter(errors.items()))
    message = messages[0] if isinstance(messages, list) else messages
    return f"{field}: {message}" if field != "non_field_errors" else str(message)


@extend_schema(
    methods=["POST"],
    request=ExportRequestSerializer,
    responses={
        202: ExportSerializer,
        400: OpenApiResponse(description="Bad options: {detail, code}."),
    },
)
@extend_schema(methods=["GET"], responses=ExportSerializer(many=True))
@api_view(["GET", "POST"])
@permission_classes([IsAdminUser])
@parser_classes([JSONParser])
def export_list_create(request: Request, study_id: int) -> Response:
    study = _study(study_id)
    if request.method == "GET":
        exports = selectors.export_list(study=study)[:100]
        return Response(
            ExportSerializer(exports, many=True, context={"request": request}).data
        )
    # A JSON object of known options only: anything else would be quietly
    # ignored and start an export nobody asked for.
    if not isinstance(request.data, dict):
        raise InvalidInput("Send a JSON object of export options.")
    unknown = sorted(set(request.data) - set(ExportRequestSerializer().fields))
    if unknown:
        raise InvalidInput(f"Unknown option(s): {', '.join(unknown)[:200]}.")
    ser = ExportRequestSerializer(data=request.data)
    if not ser.is_valid():
        raise InvalidInput(_first_error(ser.errors))
    data = ser.validated_data
    export = export_jobs.export_enqueue(
        study=study,
        fmt=data["format"],
        images=data.get("images"),
        include_excluded=data["include_excluded"],
        include_invalid=data["include_invalid"],
        user=request.user,
    )
    body = ExportSerializer(export, context={"request": request}).data
    location = reverse("api-export-detail", args=[export.pk])
    return Response(
        body, status=status.HTTP_202_ACCEPTED, headers={"Location": location}
    )


@extend_schema(responses=ExportSerializer)
@api_view(["GET"])
@permission_classes([IsAdminUser])
def export_detail(request: Request, export_id: int) -> Response:
    export = _export(export_id)
    return Response(ExportSerializer(export, context={"request": request}).data)


@extend_schema(
    responses={
        (200, "application/zip"): OpenApiTypes.BINARY,
        404: OpenApiResponse(description="No such export, or not finished."),
        410: OpenApiResponse(
            description=(
                "Withdrawn: the archive was deleted because an annotator in it "
                "was erased (the reason is in `detail`)."
            )
        ),
    }
)
@api_view(["GET"])
@permission_classes([IsAdminUser])
def export_download(request: Request, export_id: int) -> FileResponse:
    export = _export(export_id)
    path = export_jobs.export_file(export)
    return FileResponse(
        path.open("rb"),
        as_attachment=True,
        filename=path.name,
        content_type="application/zip",
    )
