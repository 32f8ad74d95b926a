"""REST endpoints of stock imports: upload a CSV (202, the worker does the rest) and follow it."""

from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from inventory import imports
from inventory.models import ImportJob
from project.api.schema import errors
from users.permissions import IsStaff


class ImportUploadSerializer(serializers.Serializer):
    file = serializers.FileField(
        allow_empty_file=True,  # the worker reports an empty file on the job, like any other problem
        help_text="CSV, UTF-8, header `sku,warehouse,on_hand` and optionally `name,price`.",
    )


class ImportAcceptedSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status_url = serializers.URLField()


class ImportErrorSerializer(serializers.Serializer):
    line = serializers.IntegerField(allow_null=True, help_text="Line of the file (the header is 1); null: not a line.")
    message = serializers.CharField()


class ImportStatusSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=ImportJob.Status.choices)
    rows_total = serializers.IntegerField(help_text="Data rows in the file (known once it has been read).")
    rows_done = serializers.IntegerField()
    rows_ok = serializers.IntegerField()
    rows_failed = serializers.IntegerField()
    errors = ImportErrorSerializer(many=True, help_text="The first 1000 errors, by line; rows_failed counts all.")
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)


class ImportListView(APIView):
    permission_classes = [IsStaff]
    parser_classes = [MultiPartParser]

    @extend_schema(
        request={"multipart/form-data": ImportUploadSerializer},
        responses={202: ImportAcceptedSerializer, **errors(400, 401, 403, 413, 415, 429, 503)},
    )
    def post(self, request):
        """Upload a stock CSV; a worker imports it. Follow `status_url` for progress and row errors."""
        params = ImportUploadSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        job = imports.import_create(upload=params.validated_data["file"], actor=request.user)
        url = request.build_absolute_uri(reverse("import-detail", args=[job.pk]))
        return Response({"id": job.pk, "status_url": url}, status=status.HTTP_202_ACCEPTED, headers={"Location": url})


class ImportDetailView(APIView):
    permission_classes = [IsStaff]

    @extend_schema(responses={200: ImportStatusSerializer, **errors(401, 403, 404, 429, 503)})
    def get(self, request, import_id: int):
        """An import's status and progress; `rows_done` rises chunk by chunk while it runs."""
        job = imports.import_detail(import_id=import_id)
        return Response(ImportStatusSerializer(job).data)
