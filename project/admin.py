"""The `project` app's admin module (Django's autodiscovery imports it): the platform's admin screens."""

from project.outbox import admin as outbox_admin
from project.webhooks import admin as webhooks_admin

__all__ = ["outbox_admin", "webhooks_admin"]
