"""Small pieces the apps' admins share."""

from django.contrib import messages


class ReadOnlyAdminMixin:
    """For a ModelAdmin or an inline whose records staff may look at but never add, change or
    delete there (ledgers, keys, job reports): those rows change only through services."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def selected_ids(modeladmin, request, queryset, *, limit: int, noun: str) -> list[int] | None:
    """The ids of an admin action's selection, at most `limit` of them, or None (with a message on
    the page) when there are more: "select all" over a long list reads no more than one id past
    the limit, and nothing runs."""
    ids = list(queryset.order_by("pk").values_list("pk", flat=True)[: limit + 1])
    if len(ids) > limit:
        modeladmin.message_user(
            request,
            f"Select at most {limit:,} {noun} at a time; narrow the list with its filters. Nothing was done.",
            messages.ERROR,
        )
        return None
    return ids
