"""The models of the `project` app (app label `project`, tables `project_*`): the platform's outbox and webhooks.

Django loads an app's models from its `models` module; the models themselves live with the rest
of their packages, in project/outbox/ and project/webhooks/.
"""

from project.outbox.models import OutboxMessage
from project.webhooks.models import WebhookDelivery, WebhookEndpoint, WebhookEvent

__all__ = ["OutboxMessage", "WebhookDelivery", "WebhookEndpoint", "WebhookEvent"]
