from django import forms
from django.conf import settings
from django.contrib.auth import forms as auth_forms

from users.models import ApiKey, User


class AdminUserCreationForm(auth_forms.AdminUserCreationForm):
    class Meta:
        model = User
        fields = ("email",)


class AdminUserChangeForm(auth_forms.UserChangeForm):
    class Meta:
        model = User
        fields = "__all__"


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


class ApiKeyCreateForm(forms.Form):
    name = forms.CharField(max_length=100, required=False, help_text="To recognise it later, e.g. 'shop sync'.")
    scopes = forms.MultipleChoiceField(
        choices=[(ApiKey.Scope.READ, "read"), (ApiKey.Scope.WRITE, "write")],
        widget=forms.CheckboxSelectMultiple,
        initial=[ApiKey.Scope.READ, ApiKey.Scope.WRITE],
    )
    expires_in_days = forms.IntegerField(
        min_value=1, max_value=3650, label="Valid for (days)", widget=forms.NumberInput(attrs={"class": "qty"})
    )

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["expires_in_days"].initial = settings.API_KEY_DEFAULT_DAYS
        if user.is_staff:
            self.fields["scopes"].choices = [*self.fields["scopes"].choices, (ApiKey.Scope.STAFF, "staff")]
