import re

from django.conf import settings
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers, status
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from project.api.bounded_lists import BoundedListField
from project.api.pagination import Cursor
from project.api.schema import errors
from project.errors import NotFound
from users.keys import PREFIX_LENGTH
from users.models import ApiKey
from users.permissions import ReadScope, has_scope
from users.selectors import api_keys_of
from users.services import api_key_create_with_password, api_key_revoke


class TokenRequestSerializer(serializers.Serializer):
    email = serializers.EmailField(max_length=254)
    password = serializers.CharField(max_length=512, trim_whitespace=False)
    name = serializers.CharField(max_length=100, required=False, default="", allow_blank=True)
    # Counted before any item is checked: DRF's ListField checks max_length only after every child.
    scopes = BoundedListField(
        child=serializers.ChoiceField(choices=ApiKey.Scope.choices),
        required=False,
        allow_empty=False,
        max_items=len(ApiKey.Scope.choices),
    )
    expires_in_days = serializers.IntegerField(required=False, min_value=1, max_value=settings.API_KEY_MAX_DAYS)


class ApiKeySerializer(serializers.ModelSerializer):
    class Meta:
        model = ApiKey
        fields = ["prefix", "name", "scopes", "created_at", "expires_at", "revoked_at", "last_used_at"]


class NewApiKeySerializer(ApiKeySerializer):
    key = serializers.CharField(help_text="The key itself. Shown once; store it now.")

    class Meta(ApiKeySerializer.Meta):
        fields = ["key", *ApiKeySerializer.Meta.fields]


class TokenCreateView(APIView):
    """Exchange email and password for a new API key, shown once. A user holds at most
    API_KEYS_MAX_PER_USER live keys (409 `too_many_keys`: revoke one first)."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        request=TokenRequestSerializer,
        responses={201: NewApiKeySerializer, **errors(400, 401, 409, 413, 415, 429, 503)},
    )
    def post(self, request):
        params = TokenRequestSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        api_key, key = api_key_create_with_password(**params.validated_data)
        api_key.key = key
        return Response(NewApiKeySerializer(api_key).data, status=status.HTTP_201_CREATED)


class ApiKeyListView(generics.ListAPIView):
    """The signed-in user's keys (never the keys themselves)."""

    serializer_class = ApiKeySerializer
    permission_classes = [ReadScope]
    pagination_class = Cursor

    def get_queryset(self):
        return api_keys_of(user=self.request.user)

    @extend_schema(responses={200: ApiKeySerializer(many=True), **errors(400, 401, 403, 404, 429, 503)})
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


# A key prefix as users.keys makes them: anything else names no key (and odd text, a NUL byte,
# never reaches the database).
KEY_PREFIX = re.compile(rf"[a-z0-9]{{{PREFIX_LENGTH}}}")


class ApiKeyRevokeView(APIView):
    """Revoke one of your keys. Revoking another key needs the write scope; any key may revoke
    itself (a read-only key that leaked can be killed with itself, but cannot kill its siblings)."""

    permission_classes = [IsAuthenticated]

    @extend_schema(responses={204: None, **errors(401, 403, 404, 429, 503)})
    def delete(self, request, prefix: str):
        revoking_itself = isinstance(request.auth, ApiKey) and request.auth.prefix == prefix
        if not (revoking_itself or has_scope(request, ApiKey.Scope.WRITE)):
            raise PermissionDenied("Revoking another key needs the write scope; a key may always revoke itself.")
        if not KEY_PREFIX.fullmatch(prefix):
            raise NotFound("No such key.")
        get_object_or_404(api_keys_of(user=request.user), prefix=prefix)
        api_key_revoke(user=request.user, prefix=prefix)
        return Response(status=status.HTTP_204_NO_CONTENT)
