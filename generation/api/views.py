"""REST API for generation jobs: queue one, poll it."""

from django.db import transaction
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.decorators import api_view, permission_classes
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response

from annotation.studies.models import Study

from .. import services
from ..models import GenerationJob, Prompt
from .serializers import JobCreateSerializer, JobSerializer


def _job_queryset():
    return GenerationJob.objects.select_related("prompt").prefetch_related(
        "items__image"
    )


@extend_schema(request=JobCreateSerializer, responses={201: JobSerializer})
@api_view(["POST"])
@permission_classes([IsAdminUser])
def job_create(request: Request) -> Response:
    serializer = JobCreateSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    data = serializer.validated_data
    # Validate the job before creating a prompt, so bad input writes nothing.
    services.job_validate(
        backend=data["backend"],
        model=data["model"],
        n_seeds=data["n_seeds"],
        params=data["params"],
    )
    with transaction.atomic(durable=True):
        if data.get("prompt") is not None:
            prompt = get_object_or_404(Prompt, pk=data["prompt"])
        else:
            study = get_object_or_404(Study, pk=data["study"])
            prompt = services.prompt_create(
                study=study,
                text=data["text"],
                domain=data["domain"],
                tags=data["tags"],
                negative_prompt=data["negative_prompt"],
                created_by=request.user,
            )
        job = services.job_create(
            prompt=prompt,
            backend=data["backend"],
            model=data["model"],
            n_seeds=data["n_seeds"],
            params=data["params"],
            seed_start=data["seed_start"],
            created_by=request.user,
        )
    job = _job_queryset().get(pk=job.pk)
    return Response(
        JobSerializer(job, context={"request": request}).data,
        status=status.HTTP_201_CREATED,
    )


@extend_schema(responses=JobSerializer)
@api_view(["GET"])
@permission_classes([IsAdminUser])
def job_detail(request: Request, job_id: int) -> Response:
    job = get_object_or_404(_job_queryset(), pk=job_id)
    return Response(JobSerializer(job, context={"request": request}).data)
