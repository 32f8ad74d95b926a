"""Account pages, included under /accounts/ by project.urls (Django's standard URL names)."""

from django.urls import path, re_path

from users import views

urlpatterns = [
    path("", views.account, name="account"),
    path("signup/", views.signup, name="signup"),
    path("login/", views.LoginPage.as_view(), name="login"),
    path("logout/", views.LogoutPage.as_view(), name="logout"),
    path("password-change/", views.PasswordChangePage.as_view(), name="password_change"),
    path("password-change/done/", views.PasswordChangeDonePage.as_view(), name="password_change_done"),
    path("password-reset/", views.PasswordResetPage.as_view(), name="password_reset"),
    path("password-reset/sent/", views.PasswordResetSentPage.as_view(), name="password_reset_done"),
    path("password-reset/done/", views.PasswordResetCompletePage.as_view(), name="password_reset_complete"),
    path("password-reset/<uidb64>/<token>/", views.PasswordResetConfirmPage.as_view(), name="password_reset_confirm"),
    path("keys/", views.api_key_create_page, name="api-key-create"),
    re_path(r"^keys/(?P<prefix>[a-z0-9]{1,16})/revoke/$", views.api_key_revoke_page, name="api-key-revoke"),
]
