"""Run in a subprocess against the pair's primary: migrate, then the shop the replica tests use.
Prints one JSON line: the bearer keys and a session cookie of the users."""

import json

import django

django.setup()

from decimal import Decimal  # noqa: E402

from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY  # noqa: E402
from django.contrib.sessions.backends.db import SessionStore  # noqa: E402
from django.core.management import call_command  # noqa: E402

from inventory import services as stock  # noqa: E402
from users.models import User  # noqa: E402
from users.services import api_key_create  # noqa: E402

call_command("migrate", interactive=False, verbosity=0)

stock.warehouse_create(code="MAIN", name="Main")
for sku, name in [("MUG", "Blue mug"), ("TEA", "Green tea"), ("PEN", "Red pen")]:
    stock.product_create(sku=sku, name=name, price=Decimal("10.00"))
    stock.stock_receive(sku=sku, warehouse_code="MAIN", quantity=50)


def session_of(user: User) -> str:
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    return session.session_key


found = {}
for name, is_staff in [("shopper", False), ("other_shopper", False), ("staff", True), ("other_staff", True)]:
    user = User.objects.create_user(email=f"{name}@example.com", password="correct horse battery staple")
    user.is_staff = user.is_superuser = is_staff  # the admin's pages too
    user.save()
    scopes = ["read", "write", "staff"] if is_staff else None
    found[name] = {"key": api_key_create(user=user, scopes=scopes)[1], "session": session_of(user)}
print(json.dumps(found))
