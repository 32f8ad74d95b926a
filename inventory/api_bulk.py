"""POST /api/v1/stock/levels/bulk (staff): set on_hand of up to 1,000 levels in one call, each row
compare-and-set on the on_hand it was counted against, idempotent by its Idempotency-Key.
Parse, call inventory.bulk.stock_levels_set_bulk, shape the output."""

import re

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from inventory import bulk
from inventory.models import CODE_VALIDATOR, SKU_VALIDATOR
from inventory.services import MAX_QUANTITY
from project.api.bounded_lists import BoundedListSerializer
from project.api.idempotency import idempotency_key, request_fingerprint
from project.api.schema import ErrorEnvelope, errors
from project.errors import IdempotencyKeyRequired
from users.permissions import IsStaff

# As the orders' keys: printable ASCII without spaces, no longer than the key row stores.


class BulkKeyRequired(IdempotencyKeyRequired):
    default_detail = "Send an Idempotency-Key header: a unique string per bulk request, up to 255 characters."


# --- requests ------------------------------------------------------------------------------------


class BulkRowsSerializer(BoundedListSerializer):
    """Counted against the limit before any row is validated (project.api.bounded_lists)."""

    default_error_messages = {"too_long": "At most {max_length} rows per request."}


class BulkRowSerializer(serializers.Serializer):
    sku = serializers.CharField(max_length=64, validators=[SKU_VALIDATOR])
    warehouse = serializers.CharField(max_length=32, validators=[CODE_VALIDATOR])
    on_hand = serializers.IntegerField(min_value=0, max_value=MAX_QUANTITY, help_text="The counted units.")
    expected_on_hand = serializers.IntegerField(
        min_value=0,
        max_value=MAX_QUANTITY,
        required=False,
        allow_null=True,
        default=None,
        help_text="The on_hand this row was counted against: another current value refuses the row (stale_quantity).",
    )

    class Meta:
        list_serializer_class = BulkRowsSerializer


class BulkSetSerializer(serializers.Serializer):
    rows = BulkRowSerializer(many=True, allow_empty=False, max_length=bulk.MAX_BULK_ROWS)
    error_policy = serializers.ChoiceField(
        choices=bulk.ERROR_POLICIES,
        default=bulk.ALL_OR_NOTHING,
        help_text="all_or_nothing: one refused row refuses the call (409). reject_failed_rows: apply the others.",
    )
    reason = serializers.ChoiceField(choices=bulk.REASONS, default="count", help_text="The ledger rows' reason.")
    reference = serializers.CharField(
        max_length=bulk.REFERENCE_MAX_LENGTH,
        required=False,
        allow_blank=True,
        default="",
        help_text="The ledger rows' reference.",
    )

    def validate_rows(self, rows):
        duplicates = bulk.duplicate_rows([(row["sku"], row["warehouse"]) for row in rows])
        if duplicates:
            raise serializers.ValidationError(duplicates)
        return rows


# The fast path of bulk_request_data: what a well-formed body holds, taken from the serializers
# above, so the two cannot drift apart.
_ROW_FIELDS = frozenset(BulkRowSerializer().fields)
_BODY_FIELDS = frozenset(BulkSetSerializer().fields)
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _count(value) -> bool:
    return type(value) is int and 0 <= value <= MAX_QUANTITY


def _well_formed_bulk_request(data) -> dict | None:
    """BulkSetSerializer's validated data for a body it would take exactly as it is, or None for
    anything else (which the serializer then judges, with its own messages): 1,000 rows through
    the nested serializers cost more than the rest of the request."""
    if type(data) is not dict or not data.keys() <= _BODY_FIELDS:
        return None
    rows = data.get("rows")
    policy = data.get("error_policy", bulk.ALL_OR_NOTHING)
    reason = data.get("reason", "count")
    reference = data.get("reference", "")
    if type(rows) is not list or not 0 < len(rows) <= bulk.MAX_BULK_ROWS:
        return None
    if policy not in bulk.ERROR_POLICIES or reason not in bulk.REASONS:
        return None
    if type(reference) is not str or len(reference) > bulk.REFERENCE_MAX_LENGTH or reference != reference.strip():
        return None
    if "\x00" in reference or _SURROGATE.search(reference):
        return None
    parsed = []
    for row in rows:
        if type(row) is not dict or not row.keys() <= _ROW_FIELDS:
            return None
        sku, warehouse, on_hand = row.get("sku"), row.get("warehouse"), row.get("on_hand")
        expected = row.get("expected_on_hand")
        if type(sku) is not str or not SKU_VALIDATOR.regex.fullmatch(sku):
            return None
        if type(warehouse) is not str or not CODE_VALIDATOR.regex.fullmatch(warehouse):
            return None
        if not _count(on_hand) or not (expected is None or _count(expected)):
            return None
        parsed.append({"sku": sku, "warehouse": warehouse, "on_hand": on_hand, "expected_on_hand": expected})
    if len({(row["sku"], row["warehouse"]) for row in parsed}) != len(parsed):
        return None  # the serializer words the duplicates
    return {"rows": parsed, "error_policy": policy, "reason": reason, "reference": reference}


def bulk_request_data(data) -> dict:
    """The validated body of POST /stock/levels/bulk; raises ValidationError (400) as BulkSetSerializer does."""
    validated = _well_formed_bulk_request(data)
    if validated is None:
        params = BulkSetSerializer(data=data)
        params.is_valid(raise_exception=True)
        validated = params.validated_data
    return validated


# --- responses -----------------------------------------------------------------------------------


class BulkRowErrorSerializer(serializers.Serializer):
    code = serializers.ChoiceField(
        choices=[bulk.UNKNOWN_SKU, bulk.UNKNOWN_WAREHOUSE, bulk.STALE_QUANTITY, bulk.INVALID_STOCK]
    )
    detail = serializers.CharField()
    current_on_hand = serializers.IntegerField(required=False, help_text="stale_quantity, invalid_stock.")
    reserved = serializers.IntegerField(required=False, help_text="invalid_stock: the units orders hold.")


class BulkRowResultSerializer(serializers.Serializer):
    index = serializers.IntegerField(help_text="The row's position in the request, from 0.")
    sku = serializers.CharField()
    warehouse = serializers.CharField()
    status = serializers.ChoiceField(choices=[bulk.UPDATED, bulk.UNCHANGED, bulk.REFUSED])
    on_hand = serializers.IntegerField(allow_null=True, help_text="Now (null: unknown SKU or warehouse).")
    previous_on_hand = serializers.IntegerField(allow_null=True, help_text="Before this call.")
    version = serializers.IntegerField(allow_null=True, help_text="The level's version now.")
    error = BulkRowErrorSerializer(required=False, help_text="Refused rows only.")


class BulkSetResultSerializer(serializers.Serializer):
    results = BulkRowResultSerializer(many=True, help_text="One per row, in the request's order.")
    updated = serializers.IntegerField()
    unchanged = serializers.IntegerField()
    refused = serializers.IntegerField()


class BulkRefusedRowSerializer(BulkRowErrorSerializer):
    index = serializers.IntegerField()
    sku = serializers.CharField()
    warehouse = serializers.CharField()


IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    required=True,
    description="Unique per bulk request (1 to 255 printable ASCII characters).",
)


class StockLevelsBulkView(APIView):
    permission_classes = [IsStaff]

    @extend_schema(
        operation_id="v1_stock_levels_bulk_set",
        parameters=[IDEMPOTENCY_HEADER],
        request=BulkSetSerializer,
        responses={
            200: BulkSetResultSerializer,
            409: OpenApiResponse(
                ErrorEnvelope,
                description=(
                    "`rows_refused` (all_or_nothing): nothing was written; `rows` lists each refused row "
                    "(index, sku, warehouse, code, detail, current_on_hand?, reserved?)."
                ),
            ),
            **errors(400, 401, 403, 413, 415, 422, 429, 503),
        },
        description=(
            "Set on_hand of up to 1,000 stock levels (a cycle count, or an adjustment to an absolute number). "
            "A row with `expected_on_hand` is compare-and-set: another current on_hand refuses it (`stale_quantity`, "
            "with `current_on_hand`). A row is refused too for an unknown SKU or warehouse (`unknown_sku`, "
            "`unknown_warehouse`) or an on_hand below the reserved units (`invalid_stock`). Under `all_or_nothing` "
            "(the default) one refused row refuses the call: 409 `rows_refused`, nothing written. Under "
            "`reject_failed_rows` the other rows are applied: 200 with every row's status (updated, unchanged, "
            "refused). One ledger row per changed level (reason `count` or `adjustment`, the `reference`). "
            "Idempotency-Key required (400 without); the same key and body return the first answer (200 or 409) "
            "again with `Idempotent-Replayed: true`; the same key with another body is 422. The same sku and "
            "warehouse twice, or more than 1,000 rows, is 400."
        ),
    )
    def post(self, request):
        key = idempotency_key(request, max_length=bulk.KEY_MAX_LENGTH, missing=BulkKeyRequired)
        data = bulk_request_data(request.data)
        result = bulk.stock_levels_set_bulk(
            user=request.user,
            key=key,
            fingerprint=request_fingerprint(request.method, request.path, request.data),
            rows=[bulk.BulkRow(**row) for row in data["rows"]],
            error_policy=data["error_policy"],
            reason=data["reason"],
            reference=data["reference"],
        )
        response = Response(result.body, status=result.status)
        if result.replayed:
            response["Idempotent-Replayed"] = "true"
        return response
