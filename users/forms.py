from django import forms
from django.conf import settings
from django.contrib.auth import forms as auth_forms
from django.contrib.sites.shortcuts import get_current_site
from django.core.validators import MaxValueValidator

from users.models import ApiKey, User
from users.services import password_reset_request, user_password_set


class AdminUserCreationForm(auth_forms.AdminUserCreationForm):
    class Meta:
        model = User
        fields = ("email",)


class AdminUserChangeForm(auth_forms.UserChangeForm):
    class Meta:
        model = User
        fields = "__all__"


class AdminPasswordChangeForm(auth_forms.AdminPasswordChangeForm):
    """The admin's "change password" form, which also offers to end the user's API keys (ticked):
    staff set a password for someone mostly when the old one may be known to someone else."""

    revoke_api_keys = forms.BooleanField(
        label="Also revoke this user's API keys",
        required=False,
        initial=True,
        help_text="Every API key of this user stops working; they can create new ones.",
    )

    def save(self, commit=True):
        password = self.cleaned_data["password1"] if self.cleaned_data.get("set_usable_password", True) else None
        self.revoked = user_password_set(
            user=self.user, password=password, revoke_api_keys=self.cleaned_data["revoke_api_keys"]
        )
        return self.user


# --- shopper pages --------------------------------------------------------------------------


class SignupForm(auth_forms.UserCreationForm):
    """Email, an optional name and a password (checked by AUTH_PASSWORD_VALIDATORS)."""

    class Meta:
        model = User
        fields = ("email", "full_name")
        labels = {"email": "Email", "full_name": "Name (optional)"}
        widgets = {"email": forms.EmailInput(attrs={"autocomplete": "email", "autofocus": True})}

    def clean_email(self) -> str:
        # Emails are stored lower-case (UserManager); compare the same way so case is no loophole.
        email = self.cleaned_data["email"].strip().lower()
        if User.objects.filter(email__iexact=email).exists():
            raise forms.ValidationError("An account with this email already exists. Log in, or reset its password.")
        return email


class EmailAuthenticationForm(auth_forms.AuthenticationForm):
    """Django's login form; the email is matched whatever its case, as signup stores it lower-case."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["username"].label = "Email"
        self.fields["username"].widget = forms.EmailInput(attrs={"autocomplete": "email", "autofocus": True})

    def clean(self):
        username = self.cleaned_data.get("username")
        if isinstance(username, str):
            self.cleaned_data["username"] = username.strip().lower()
        return super().clean()


class PasswordChangeForm(auth_forms.PasswordChangeForm):
    """Django's form (old password, new one twice) and a box, ticked, to revoke the user's API keys."""

    revoke_api_keys = forms.BooleanField(
        label="Also revoke my API keys",
        required=False,
        initial=True,
        help_text="Programs that use them stop working until you give them a new key.",
    )

    def save(self, commit=True):
        self.revoked = user_password_set(
            user=self.user,
            password=self.cleaned_data["new_password1"],
            revoke_api_keys=self.cleaned_data["revoke_api_keys"],
        )
        return self.user


class SetPasswordForm(auth_forms.SetPasswordForm):
    """The form behind a reset link: the new password always ends every API key of the account
    (whoever asked for the reset may not be the one who made the keys)."""

    def save(self, commit=True):
        user_password_set(user=self.user, password=self.cleaned_data["new_password1"], revoke_api_keys=True)
        return self.user


class PasswordResetForm(auth_forms.PasswordResetForm):
    """Asks for the email through the outbox instead of sending it during the request (whose time
    would tell whether the address has an account)."""

    def save(self, *, domain_override=None, use_https=False, request=None, **ignored):
        # The subject and body templates are users.emails'; the token is made when the task sends.
        domain = domain_override or get_current_site(request).domain
        return password_reset_request(email=self.cleaned_data["email"], domain=domain, use_https=use_https)


class ApiKeyCreateForm(forms.Form):
    name = forms.CharField(max_length=100, required=False, help_text="To recognise it later, e.g. 'shop sync'.")
    scopes = forms.MultipleChoiceField(
        choices=[(ApiKey.Scope.READ, "read"), (ApiKey.Scope.WRITE, "write")],
        widget=forms.CheckboxSelectMultiple,
        initial=[ApiKey.Scope.READ, ApiKey.Scope.WRITE],
    )
    expires_in_days = forms.IntegerField(
        min_value=1, label="Valid for (days)", widget=forms.NumberInput(attrs={"class": "qty"})
    )

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        longest = settings.API_KEY_MAX_DAYS
        days = self.fields["expires_in_days"]
        days.initial = min(settings.API_KEY_DEFAULT_DAYS, longest)
        days.max_value = longest
        days.validators.append(MaxValueValidator(longest))
        days.widget.attrs["max"] = longest
        if user.is_staff:
            self.fields["scopes"].choices = [*self.fields["scopes"].choices, (ApiKey.Scope.STAFF, "staff")]
