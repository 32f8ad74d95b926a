"""The admin's CSV upload: staff is checked before CSRF parses the multipart body."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.files.uploadhandler import MemoryFileUploadHandler
from django.test import Client

from inventory.models import ImportJob
from tests.factories import UserFactory
from users.models import User

pytestmark = pytest.mark.django_db

UPLOAD = "/admin/inventory/importjob/upload/"
CSRF_SECRET = "a" * 32  # a CSRF cookie any client can give itself


class CountingUploadHandler(MemoryFileUploadHandler):
    """Counts the multipart bodies Django starts to parse (request.FILES being built)."""

    parses = 0

    def handle_raw_input(self, *args, **kwargs):
        type(self).parses += 1
        return super().handle_raw_input(*args, **kwargs)


@pytest.fixture(autouse=True)
def counting(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.FILE_UPLOAD_HANDLERS = [f"{__name__}.CountingUploadHandler"]
    CountingUploadHandler.parses = 0


def _signed_in(user: User) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def _csv() -> SimpleUploadedFile:
    return SimpleUploadedFile("stock.csv", b"sku,warehouse,on_hand\n", content_type="text/csv")


def test_a_signed_in_non_staff_users_upload_is_refused_before_its_body_is_parsed():
    client = _signed_in(UserFactory(is_staff=False))
    client.cookies["csrftoken"] = CSRF_SECRET

    response = client.post(UPLOAD, {"file": _csv()})

    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert CountingUploadHandler.parses == 0  # request.FILES was never built
    assert not ImportJob.objects.exists()


def test_a_staff_upload_without_the_csrf_token_is_refused():
    client = _signed_in(UserFactory(is_staff=True, is_superuser=True))
    client.cookies["csrftoken"] = CSRF_SECRET

    response = client.post(UPLOAD, {"file": _csv()})

    assert response.status_code == 403
    assert not ImportJob.objects.exists()


def test_a_staff_upload_with_the_csrf_token_is_queued():
    client = _signed_in(UserFactory(is_staff=True, is_superuser=True))
    token = client.get(UPLOAD).context["csrf_token"]

    response = client.post(UPLOAD, {"file": _csv(), "csrfmiddlewaretoken": str(token)})

    assert response.status_code == 302, response.content[:500]
    assert ImportJob.objects.count() == 1
    assert CountingUploadHandler.parses == 1
