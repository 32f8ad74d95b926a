"""The transactional outbox: the model (app label `project`), enqueueing in the caller's
transaction, the relay that publishes to Celery, the task base class, its metrics, admin and prune task."""
