"""The import in the admin: upload, a job page that follows it without JavaScript, and the actions."""

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from inventory.models import ImportJob, ImportWarehouse
from project.outbox.models import OutboxMessage
from tests.factories import ProductFactory, WarehouseFactory
from tests.inventory.import_support import csv_bytes, csv_upload, running_import_worker, wait_finished
from users.models import User

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

LIST = "/admin/inventory/importjob/"
REFRESH = '<meta http-equiv="refresh"'


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def admin_user() -> User:
    return User.objects.create_user(email="admin@example.com", password="x" * 20, is_staff=True, is_superuser=True)


@pytest.fixture
def admin(admin_user) -> Client:
    client = Client()
    client.force_login(admin_user)
    return client


def test_an_upload_in_the_admin_is_followed_on_a_self_refreshing_page_until_it_finishes(admin, media):
    WarehouseFactory(code="MAIN")
    ProductFactory(sku="MUG")
    listing = admin.get(LIST).content.decode()
    assert f'href="{LIST}upload/"' in listing
    for name in ("products", "stock", "orders"):
        assert f'href="{LIST}exports/{name}.csv"' in listing
    assert admin.get(f"{LIST}add/")["Location"] == f"{LIST}upload/"
    form = admin.get(f"{LIST}upload/").content.decode()
    assert 'enctype="multipart/form-data"' in form and 'type="file"' in form

    with running_import_worker():
        response = admin.post(
            f"{LIST}upload/", {"file": csv_upload(csv_bytes(["MUG,MAIN,4", "MUG,NOWHERE,1"]), "counts.csv")}
        )
        job = ImportJob.objects.get()
        assert response.status_code == 302 and response["Location"] == f"{LIST}{job.pk}/change/"
        queued = admin.get(response["Location"]).content.decode()
        job = wait_finished(job.pk)

    assert REFRESH in queued or job.finished  # the worker may already be done when the page is read
    assert job.original_name == "counts.csv" and job.created_by.email == "admin@example.com"
    done = admin.get(f"{LIST}{job.pk}/change/").content.decode()
    assert REFRESH not in done
    assert "Partial" in done
    assert "Unknown warehouse &#x27;NOWHERE&#x27;." in done
    assert "1 of 2 rows" not in done and "2 of 2 rows (100%)" in done


def test_the_job_page_refreshes_itself_while_the_import_is_queued(admin, media):
    job = ImportJob.objects.create(file="imports/x.csv", original_name="x.csv")
    page = admin.get(f"{LIST}{job.pk}/change/").content.decode()
    assert f'{REFRESH} content="2">' in page
    assert f'{REFRESH} content="5">' in admin.get(LIST).content.decode()


def test_uploading_needs_the_add_permission(media):
    clerk = User.objects.create_user(email="clerk@example.com", password="x" * 20, is_staff=True)
    clerk.user_permissions.add(Permission.objects.get(codename="view_importjob"))
    client = Client()
    client.force_login(clerk)
    assert client.get(LIST).status_code == 200
    assert client.get(f"{LIST}upload/").status_code == 403
    assert client.post(f"{LIST}upload/", {"file": csv_upload(csv_bytes([]))}).status_code == 403
    assert not ImportJob.objects.exists()


def test_stop_marks_an_unfinished_import_failed_and_releases_its_warehouses(admin, media):
    main = WarehouseFactory(code="MAIN")
    job = ImportJob.objects.create(file="imports/x.csv", status=ImportJob.Status.RUNNING)
    ImportWarehouse.objects.create(job=job, warehouse=main, running=True)

    admin.post(LIST, {"action": "stop_imports", "_selected_action": [job.pk]})

    job.refresh_from_db()
    assert job.status == "failed"
    assert job.errors == [{"line": None, "message": "Stopped by admin@example.com."}]
    assert not ImportWarehouse.objects.filter(running=True).exists()


def test_queue_again_sends_unfinished_imports_through_the_outbox_and_leaves_finished_ones(admin, media):
    waiting = ImportJob.objects.create(file="imports/a.csv")
    done = ImportJob.objects.create(file="imports/b.csv", status=ImportJob.Status.SUCCEEDED)

    admin.post(LIST, {"action": "queue_again", "_selected_action": [waiting.pk, done.pk]})

    assert list(OutboxMessage.objects.values_list("task", "args")) == [("inventory.import_stock", [waiting.pk])]
