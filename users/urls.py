from django.urls import path

from users import api

urlpatterns = [
    path("auth/tokens", api.TokenCreateView.as_view(), name="auth-tokens"),
    path("auth/keys", api.ApiKeyListView.as_view(), name="auth-keys"),
    path("auth/keys/<str:prefix>", api.ApiKeyRevokeView.as_view(), name="auth-key-revoke"),
]
