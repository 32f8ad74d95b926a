import json
from datetime import UTC, datetime
from decimal import Decimal

from django.utils.translation import gettext_lazy
from rest_framework.renderers import JSONRenderer
from rest_framework.utils.serializer_helpers import ReturnDict

from project.api.renderers import OrjsonRenderer


def test_orjson_renders_what_drf_renders():
    data = ReturnDict(
        {"price": "12.50", "name": gettext_lazy("Not found."), "at": "2026-11-22T02:15:12.962760Z",
         "lines": [{"quantity": 2}], "none": None},
        serializer=None,
    )  # fmt: skip

    assert json.loads(OrjsonRenderer().render(data)) == json.loads(JSONRenderer().render(data))


def test_a_stray_decimal_keeps_its_digits():
    # Serializers already send money as strings; a Decimal that slips through stays exact too.
    assert json.loads(OrjsonRenderer().render({"price": Decimal("0.10")})) == {"price": "0.10"}


def test_datetimes_are_iso_strings():
    moment = datetime(2026, 11, 22, 2, 15, 12, 962760, tzinfo=UTC)

    assert json.loads(OrjsonRenderer().render({"at": moment})) == {"at": "2026-11-22T02:15:12.962760+00:00"}
