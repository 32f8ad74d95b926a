"""The models of the `project` app (app label `project`, tables `project_*`): the platform's outbox.

Django loads an app's models from its `models` module; the model itself lives with the rest of
the outbox in project/outbox/.
"""

from project.outbox.models import OutboxMessage

__all__ = ["OutboxMessage"]
