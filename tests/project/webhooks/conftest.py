# The fixtures of the webhook engine's tests (tests.project.webhooks.support).
from tests.project.webhooks.support import event_types, make_endpoint  # noqa: F401
