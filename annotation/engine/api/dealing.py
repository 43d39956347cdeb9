"""Staff API for a study's dealing policy (issue 27): read it with each
annotator's model uncertainty, change it (``dealing_policy_set``: a bad value
is refused with a message and changes nothing)."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.decorators import api_view, permission_classes
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response

from annotation.engine.selectors import dealing_overview
from annotation.engine.services.dealing import POLICIES, dealing_policy_set
from annotation.models import Study
from core.exceptions import InvalidInput

FIELDS = {"policy", "warmup", "band"}


class DealingAnnotatorSerializer(serializers.Serializer):
    public_id = serializers.CharField()
    ratings = serializers.IntegerField()
    uncertainty = serializers.FloatField(
        allow_null=True,
        help_text="mean posterior sd of their own part of the score over the "
        "images open to them, in standard deviations of their own ratings",
    )
    ranked = serializers.IntegerField()
    how = serializers.CharField()
    version = serializers.IntegerField(allow_null=True)
    refreshed_at = serializers.DateTimeField()


class DealingSerializer(serializers.Serializer):
    policy = serializers.ChoiceField(choices=POLICIES)
    warmup = serializers.IntegerField(min_value=0, max_value=1000)
    band = serializers.IntegerField(min_value=0, max_value=1000)
    dealt = serializers.DictField(child=serializers.IntegerField(), read_only=True)
    annotators = DealingAnnotatorSerializer(many=True, read_only=True)


@extend_schema(
    methods=["PATCH"],
    request=DealingSerializer,
    responses={200: DealingSerializer},
    description="Change the policy and its settings (staff); omitted settings "
    "keep their values. Unknown names or values out of range: 400, nothing "
    "changed.",
)
@extend_schema(methods=["GET"], responses={200: DealingSerializer})
@api_view(["GET", "PATCH"])
@permission_classes([IsAdminUser])
def study_dealing(request: Request, study_id: int) -> Response:
    study = get_object_or_404(Study, pk=study_id)
    if request.method == "PATCH":
        data = request.data if isinstance(request.data, dict) else {}
        unknown = set(data) - FIELDS
        if unknown or not data:
            raise InvalidInput(
                f"Unknown setting(s): {', '.join(sorted(unknown))}."
                if unknown
                else "Nothing to change: send policy, warmup and/or band."
            )
        dealing_policy_set(
            study=study,
            policy=data.get("policy", study.dealing_policy),
            warmup=data.get("warmup"),
            band=data.get("band"),
        )
    return Response(DealingSerializer(dealing_overview(study=study)).data)
