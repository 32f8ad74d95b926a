"""The import endpoints without a worker: who may upload and read, and what a bad request gets."""

import pytest

from inventory.models import ImportJob
from project.outbox.models import OutboxMessage
from tests.inventory.import_support import csv_bytes, csv_upload

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def test_an_upload_is_stored_and_its_task_queued_through_the_outbox_in_one_transaction(staff_client, media):
    response = staff_client.post(
        "/api/v1/imports", {"file": csv_upload(csv_bytes(["MUG,MAIN,1"]), "../../etc/passwd")}, format="multipart"
    )

    assert response.status_code == 202
    job = ImportJob.objects.get(pk=response.json()["id"])
    assert response["Location"] == response.json()["status_url"]
    assert (job.status, job.original_name, job.created_by.email) == ("queued", "passwd", "staff@example.com")
    stored = media / job.file.name
    assert stored.parent == media / "imports"  # a name of our own, never the client's path
    assert stored.read_bytes() == csv_bytes(["MUG,MAIN,1"])
    assert list(OutboxMessage.objects.values_list("task", "args")) == [("inventory.import_stock", [job.pk])]


def test_the_status_of_a_queued_import(staff_client):
    job = ImportJob.objects.create(file="imports/x.csv")
    body = staff_client.get(f"/api/v1/imports/{job.pk}").json()
    assert {k: body[k] for k in ("id", "status", "rows_total", "rows_done", "rows_ok", "rows_failed", "errors")} == {
        "id": job.pk,
        "status": "queued",
        "rows_total": 0,
        "rows_done": 0,
        "rows_ok": 0,
        "rows_failed": 0,
        "errors": [],
    }


def test_a_missing_file_or_a_json_body_is_refused_with_the_envelope(staff_client):
    missing = staff_client.post("/api/v1/imports", {}, format="multipart")
    assert missing.status_code == 400
    assert missing.json()["error"]["code"] == "invalid" and "file" in missing.json()["error"]["fields"]
    as_json = staff_client.post("/api/v1/imports", {"file": "MUG,MAIN,1"}, format="json")
    assert as_json.status_code == 415
    assert "error" in as_json.json()
    assert not ImportJob.objects.exists()


def test_imports_are_for_staff_only(api_client, customer_client, staff_client):
    job = ImportJob.objects.create(file="imports/x.csv")
    upload = {"file": csv_upload(csv_bytes(["MUG,MAIN,1"]))}
    assert api_client.post("/api/v1/imports", upload, format="multipart").status_code == 401
    assert customer_client.post("/api/v1/imports", upload, format="multipart").status_code == 403
    assert customer_client.get(f"/api/v1/imports/{job.pk}").status_code == 403
    assert api_client.get(f"/api/v1/imports/{job.pk}").status_code == 401
    assert staff_client.get("/api/v1/imports/999999").status_code == 404
    assert ImportJob.objects.count() == 1
