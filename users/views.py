"""Account pages: sign up, log in and out, password change and reset (Django's views, our
templates), and the account page with the shopper's API keys.

Template names live under users/ on purpose: the admin ships registration/*.html for its own
password pages, and ours must not replace them.
"""

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.urls import reverse_lazy
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from project.errors import InvalidInput, NotFound
from users.forms import (
    ApiKeyCreateForm,
    EmailAuthenticationForm,
    PasswordChangeForm,
    PasswordResetForm,
    SetPasswordForm,
    SignupForm,
)
from users.selectors import api_keys_of
from users.services import TooManyKeys, api_key_create, api_key_revoke


def _safe_next(request, fallback: str = "/") -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return target
    return fallback


@sensitive_post_parameters("password1", "password2")
@csrf_protect
@never_cache
@require_http_methods(["GET", "POST"])
def signup(request):
    if request.user.is_authenticated:
        return redirect("account")
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        # Logging in keeps the session's data (the cart); only its key changes.
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, f"Welcome! You are signed in as {user.email}.")
        return redirect(_safe_next(request))
    return render(
        request,
        "users/signup.html",
        {"form": form, "next": _safe_next(request, "")},
        status=400 if form.is_bound else 200,
    )


class LoginPage(auth_views.LoginView):
    template_name = "users/login.html"
    authentication_form = EmailAuthenticationForm
    redirect_authenticated_user = True

    def form_valid(self, form):
        response = super().form_valid(form)
        messages.success(self.request, f"Signed in as {form.get_user().email}.")
        return response

    def form_invalid(self, form):
        response = super().form_invalid(form)
        response.status_code = 400
        return response


class LogoutPage(auth_views.LogoutView):
    next_page = "/"

    def post(self, request, *args, **kwargs):
        response = super().post(request, *args, **kwargs)
        messages.info(request, "You are signed out.")
        return response


class PasswordChangePage(auth_views.PasswordChangeView):
    template_name = "users/password_change_form.html"
    form_class = PasswordChangeForm
    success_url = reverse_lazy("password_change_done")

    def form_valid(self, form):
        response = super().form_valid(form)
        if form.revoked:
            messages.info(self.request, f"Your API keys are revoked ({form.revoked}); create new ones as needed.")
        return response


class PasswordChangeDonePage(auth_views.PasswordChangeDoneView):
    template_name = "users/password_change_done.html"


class PasswordResetPage(auth_views.PasswordResetView):
    """Always answers "sent", whether the address has an account or not (no account probing); the
    email goes through the outbox, so the answer's time does not tell either."""

    template_name = "users/password_reset_form.html"
    form_class = PasswordResetForm
    success_url = reverse_lazy("password_reset_done")


class PasswordResetSentPage(auth_views.PasswordResetDoneView):
    template_name = "users/password_reset_done.html"


class PasswordResetConfirmPage(auth_views.PasswordResetConfirmView):
    """The new password also revokes every API key of the account."""

    template_name = "users/password_reset_confirm.html"
    form_class = SetPasswordForm
    success_url = reverse_lazy("password_reset_complete")


class PasswordResetCompletePage(auth_views.PasswordResetCompleteView):
    template_name = "users/password_reset_complete.html"


def _account_page(request, *, form=None, new_key: str | None = None, status: int = 200):
    response = render(
        request,
        "users/account.html",
        {
            "keys": api_keys_of(user=request.user),
            "form": form or ApiKeyCreateForm(user=request.user),
            "new_key": new_key,
        },
        status=status,
    )
    if new_key:
        # The key is on this page only: no cache, no history copy, no session or cookie.
        response["Cache-Control"] = "no-store"
    return response


@login_required
@require_GET
def account(request):
    return _account_page(request)


@login_required
@require_POST
def api_key_create_page(request):
    form = ApiKeyCreateForm(request.POST, user=request.user)
    if not form.is_valid():
        messages.error(request, "No key was created; see the form below.")
        return _account_page(request, form=form, status=400)
    try:
        api_key, key = api_key_create(
            user=request.user,
            name=form.cleaned_data["name"],
            scopes=form.cleaned_data["scopes"],
            expires_in_days=form.cleaned_data["expires_in_days"],
        )
    except (InvalidInput, TooManyKeys) as error:
        messages.error(request, f"No key was created: {error.detail}")
        return _account_page(request, form=form, status=error.status_code)
    messages.success(request, f"Key {api_key.prefix} created. Copy it now: it is shown only this once.")
    return _account_page(request, new_key=key, status=201)


@login_required
@require_POST
def api_key_revoke_page(request, prefix: str):
    try:
        api_key = api_key_revoke(user=request.user, prefix=prefix)
    except NotFound:
        messages.error(request, "You have no such key.")
    else:
        messages.success(request, f"Key {api_key.prefix} is revoked; it no longer works.")
    return redirect("account")
