"""REST endpoints of the catalogue and stock: parse, call a selector or service, shape the output."""

import re
import time
from urllib.parse import urlencode

import orjson
from django.db import OperationalError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound as InvalidCursor
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from inventory import selectors, services
from inventory.availability import ListTemplate
from inventory.cache import cached_list
from inventory.models import SKU_VALIDATOR
from inventory.serializers import (
    AdjustmentSerializer,
    CatalogueQuerySerializer,
    CountSerializer,
    LevelSettingsSerializer,
    ProductCreateSerializer,
    ProductSerializer,
    ProductUpdateSerializer,
    StockLevelSerializer,
    StockQuerySerializer,
    TransferResultSerializer,
    TransferSerializer,
    product_payload,
)
from project.api.pagination import Cursor
from project.api.renderers import OrjsonRenderer
from project.api.schema import errors, paginated
from project.db.transactions import is_lock_error
from project.errors import NotFound, PreconditionFailed, VersionConflict
from project.http.conditional import etag, if_match_version, if_none_match_hits
from project.http.degraded import mark_stale
from users.permissions import IsStaff, acts_as_staff

# A cursor's position in the catalogue list: a product id.
_POSITION = re.compile(r"[0-9]{1,19}")


class CataloguePagination(Cursor):
    ordering = "id"

    def decode_cursor(self, request):
        """DRF's, with the position checked too: the list is ordered by id, so it is a number."""
        cursor = super().decode_cursor(request)
        if cursor is not None and cursor.position is not None and not _POSITION.fullmatch(cursor.position):
            raise InvalidCursor(self.invalid_cursor_message)
        return cursor


class StockPagination(Cursor):
    ordering = "id"


def _catalogue_query_defaults() -> tuple[frozenset, dict]:
    empty = CatalogueQuerySerializer(data={})
    empty.is_valid(raise_exception=True)
    return frozenset(empty.fields), dict(empty.validated_data)


# CatalogueQuerySerializer's fields, and what it gives for a query that sets none of them.
CATALOGUE_QUERY_FIELDS, CATALOGUE_QUERY_DEFAULTS = _catalogue_query_defaults()


def catalogue_query(query_params) -> dict:
    """The catalogue list's validated query: the serializer's defaults when the query sets none
    of its fields (the usual request, without the serializer's cost), else the serializer's
    answer (400 on bad input)."""
    if query_params.keys().isdisjoint(CATALOGUE_QUERY_FIELDS):
        return dict(CATALOGUE_QUERY_DEFAULTS)
    query = CatalogueQuerySerializer(data=query_params)
    query.is_valid(raise_exception=True)
    return query.validated_data


def catalogue_list_key(request, params: dict, active: bool | None) -> tuple[str, str, bool]:
    """The list page's cache key, the query its links carry, and whether a "last good" copy of it
    is kept. Both are built from the validated query only, in one spelling: unknown parameters
    are ignored (as DRF ignores them), so they neither make new entries nor ride in the cached
    links; a cursor is decoded (404 when mangled) and spelt again. Last good copies are kept for
    first pages of the whole catalogue only, a set bounded by the page sizes and `active`."""
    query = []
    if params["search"]:
        query.append(("search", params["search"]))
    if active is not True:
        query.append(("active", "false" if active is False else "all"))
    if params.get("updated_since") is not None:
        query.append(("updated_since", params["updated_since"].isoformat()))
    pagination = CataloguePagination()
    page_size = pagination.get_page_size(request) if "page_size" in request.query_params else pagination.page_size
    if page_size != pagination.page_size:
        query.append(("page_size", str(page_size)))
    links_query = urlencode(query) if query else ""
    cursor = pagination.decode_cursor(request) if "cursor" in request.query_params else None
    at = "" if cursor is None else f"#o={cursor.offset}&r={int(cursor.reverse)}&p={cursor.position or ''}"
    key = f"page:{request.scheme}://{request.get_host()}?{links_query}{at}"
    whole_catalogue = not params["search"] and params.get("updated_since") is None
    return key, links_query, whole_catalogue and cursor is None


def _product_sku(sku: str) -> str:
    """The path's SKU, or 404 if no product could have it: odd text (a NUL byte, which PostgreSQL
    refuses) never reaches the cache or the database."""
    if not SKU_VALIDATOR.regex.fullmatch(sku):
        raise NotFound(f"No product with SKU {sku[:70]!r}.")
    return sku


def product_etag(payload: dict) -> str:
    """A product's ETag as its payload shows it: version and availability."""
    return etag(payload["version"], available=payload["available"])


def _with_hot_mode(payload: dict) -> dict:
    """A cached product payload with the product's hot mode read now; as it is (marked stale) when
    PostgreSQL cannot answer, as every catalogue read then."""
    try:
        buckets = selectors.product_stock_buckets(sku=payload["sku"])
    except OperationalError as exc:
        if is_lock_error(exc):
            raise
        mark_stale()
        return payload
    return payload if buckets is None else {**payload, "stock_buckets": buckets}


def staff_product_payload(product) -> dict:
    """The staff's shape of a product: the public one and hot mode (`stock_buckets`)."""
    return {**product_payload(product), "stock_buckets": product.stock_buckets}


IF_MATCH = OpenApiParameter(
    "If-Match",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    required=True,
    description='The ETag from GET, e.g. "3-17": its version (3) is compared',
)
IF_NONE_MATCH = OpenApiParameter("If-None-Match", OpenApiTypes.STR, OpenApiParameter.HEADER, required=False)


class ProductListView(APIView):
    def get_permissions(self):
        return [AllowAny()] if self.request.method == "GET" else [IsStaff()]

    @extend_schema(
        operation_id="v1_products_list",
        parameters=[CatalogueQuerySerializer, OpenApiParameter("cursor", str), OpenApiParameter("page_size", int)],
        responses={200: paginated(ProductSerializer), **errors(400, 401, 404, 429, 503)},
    )
    def get(self, request):
        """The catalogue: product data cached (invalidated by product edits and imports), availability
        at most CATALOGUE_AVAILABILITY_MAX_AGE_MS old."""
        params = catalogue_query(request.query_params)
        active = {"true": True, "false": False, "all": None}[params["active"]]
        if not acts_as_staff(request):
            active = True  # shoppers never see inactive products

        key, links_query, keep_last_good = catalogue_list_key(request, params, active)

        def build() -> ListTemplate:
            read_at = time.monotonic()
            products = selectors.catalogue_list(
                search=params["search"], active=active, updated_since=params.get("updated_since")
            )
            paginator = CataloguePagination()
            page = paginator.paginate_queryset(products, request, view=self)
            # The links are shared by every request with this key: only the validated query in them.
            paginator.base_url = request.build_absolute_uri(f"{request.path}?{links_query}".rstrip("?"))

            def render(payloads: list[dict]) -> bytes:
                return OrjsonRenderer().render(paginator.get_paginated_response(payloads).data)

            return ListTemplate.render(render, [product_payload(p) for p in page], read_at)

        # The page is cached as its JSON with a gap for each product's availability, filled at
        # every read: a hit neither unpickles 25 products nor encodes them again, and an order
        # throws no page away. ("page:" keeps these entries apart from the bytes ("json:") and
        # dicts that earlier releases cached under the same tokens.)
        page = cached_list(key, build, keep_last_good=keep_last_good)
        return Response(orjson.Fragment(page.fill()))

    @extend_schema(
        request=ProductCreateSerializer, responses={201: ProductSerializer, **errors(400, 401, 403, 413, 415, 429, 503)}
    )
    def post(self, request):
        params = ProductCreateSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        product = services.product_create(**params.validated_data)
        payload = staff_product_payload(product)
        response = Response(payload, status=status.HTTP_201_CREATED)
        response["ETag"] = product_etag(payload)
        return response


class ProductDetailView(APIView):
    def get_permissions(self):
        return [AllowAny()] if self.request.method == "GET" else [IsStaff()]

    @extend_schema(
        parameters=[IF_NONE_MATCH],
        responses={
            200: ProductSerializer,
            304: OpenApiResponse(description="Not modified"),
            **errors(401, 404, 429, 503),
        },
    )
    def get(self, request, sku: str):
        """One product with `available` (and, for staff, `stock_buckets`). Its ETag changes with the
        version and with availability; If-Match on a PATCH compares only the version part."""
        payload = selectors.catalogue_entry(_product_sku(sku))
        staff = acts_as_staff(request)
        if payload is None or (not payload["active"] and not staff):
            raise NotFound(f"No product with SKU {sku!r}.")
        tag = product_etag(payload)
        if if_none_match_hits(request, tag):  # a switch of hot mode moves the version too
            response = Response(status=status.HTTP_304_NOT_MODIFIED)
        elif staff:  # hot mode is not in the cached entry: shoppers never see it
            response = Response(_with_hot_mode(payload))
        else:
            response = Response(payload)
        response["ETag"] = tag
        return response

    @extend_schema(
        parameters=[IF_MATCH],
        request=ProductUpdateSerializer,
        responses={200: ProductSerializer, **errors(400, 401, 403, 404, 412, 413, 415, 428, 429, 503)},
    )
    def patch(self, request, sku: str):
        """Change a product. `If-Match` is required (428 without it, 412 when stale).

        `stock_buckets` switches hot mode in the same compare-and-set (0 turns it off)."""
        sku = _product_sku(sku)
        expected = if_match_version(request, required=True)
        params = ProductUpdateSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        try:
            services.product_update(
                sku=sku, expected_version=expected, changes=params.validated_data, actor=request.user
            )
        except VersionConflict as conflict:
            raise PreconditionFailed(extra=conflict.extra) from None
        payload = staff_product_payload(selectors.product_detail(sku=sku))
        response = Response(payload)
        response["ETag"] = product_etag(payload)
        return response


class StockListView(APIView):
    permission_classes = [IsStaff]

    @extend_schema(
        parameters=[StockQuerySerializer, OpenApiParameter("cursor", str), OpenApiParameter("page_size", int)],
        responses={200: paginated(StockLevelSerializer), **errors(400, 401, 403, 404, 429, 503)},
    )
    def get(self, request):
        query = StockQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        levels = selectors.stock_levels(
            sku=query.validated_data.get("sku"), warehouse_code=query.validated_data.get("warehouse")
        )
        paginator = StockPagination()
        page = paginator.paginate_queryset(levels, request, view=self)
        return paginator.get_paginated_response(StockLevelSerializer(page, many=True).data)


STOCK_WRITE_ERRORS = errors(400, 401, 403, 409, 413, 415, 429, 503)


class AdjustmentView(APIView):
    permission_classes = [IsStaff]

    @extend_schema(request=AdjustmentSerializer, responses={201: StockLevelSerializer, **STOCK_WRITE_ERRORS})
    def post(self, request):
        """Add `delta` to on_hand.

        409 `version_conflict` if `expected_version` is stale, `invalid_stock` if it would break an invariant.
        """
        params = AdjustmentSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        level = services.stock_adjust(
            sku=data["sku"],
            warehouse_code=data["warehouse"],
            delta=data["delta"],
            note=data["reason"],
            expected_version=data.get("expected_version"),
            actor=request.user,
        )
        selectors.attach_stock_figures([level])
        return Response(StockLevelSerializer(level).data, status=status.HTTP_201_CREATED)


class CountView(APIView):
    permission_classes = [IsStaff]

    @extend_schema(request=CountSerializer, responses={201: StockLevelSerializer, **STOCK_WRITE_ERRORS})
    def post(self, request):
        """Set on_hand to a counted number (cycle count), if the level is still at `expected_version`."""
        params = CountSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        level = services.stock_count(
            sku=data["sku"],
            warehouse_code=data["warehouse"],
            on_hand=data["on_hand"],
            expected_version=data["expected_version"],
            note=data["note"],
            actor=request.user,
        )
        selectors.attach_stock_figures([level])
        return Response(StockLevelSerializer(level).data, status=status.HTTP_201_CREATED)


class LevelSettingsView(APIView):
    permission_classes = [IsStaff]

    @extend_schema(request=LevelSettingsSerializer, responses={200: StockLevelSerializer, **STOCK_WRITE_ERRORS})
    def post(self, request):
        """Set a level's safety stock, backorder cap, reorder point (null: off) and reorder quantity.

        409 `selling_rules_conflict` for safety stock on a product in hot mode; 400 for a backorder cap
        below what the level has backordered already."""
        params = LevelSettingsSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        changes = dict(params.validated_data)
        sku, warehouse = changes.pop("sku"), changes.pop("warehouse")
        level = services.stock_level_configure(sku=sku, warehouse_code=warehouse, changes=changes, actor=request.user)
        selectors.attach_stock_figures([level])
        return Response(StockLevelSerializer(level).data)


class TransferView(APIView):
    permission_classes = [IsStaff]

    @extend_schema(request=TransferSerializer, responses={201: TransferResultSerializer, **STOCK_WRITE_ERRORS})
    def post(self, request):
        """Move available units of a SKU from one warehouse to another."""
        params = TransferSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        source, target = services.stock_transfer(
            sku=data["sku"],
            from_code=data["from"],
            to_code=data["to"],
            quantity=data["quantity"],
            note=data["note"],
            actor=request.user,
        )
        selectors.attach_stock_figures([source, target])
        body = {"from": StockLevelSerializer(source).data, "to": StockLevelSerializer(target).data}
        return Response(body, status=status.HTTP_201_CREATED)
