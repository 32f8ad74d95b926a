"""Staff admin for the outbox: failed background work, to retry or discard.

Outbox rows are written by services and the relay only: the admin shows them and its actions
call project.outbox.services. Registered on the admin site when the wiring's project/admin.py
imports this module.
"""

from django.contrib import admin, messages
from django.utils.html import format_html

from project.http.admin_selection import selected_ids
from project.outbox.models import OutboxMessage
from project.outbox.services import outbox_discard, outbox_retry

ERROR_PREVIEW_CHARS = 80
# "Select all" over the outbox can name every row; an action takes at most this many.
ACTION_MAX_MESSAGES = 10_000


@admin.register(OutboxMessage)
class OutboxMessageAdmin(admin.ModelAdmin):
    list_display = ["id", "task", "state", "attempts", "created_at", "next_attempt_at", "done_at", "error_preview"]
    list_filter = ["state", "task"]
    search_fields = ["=id", "task", "request_id", "last_error"]
    readonly_fields = [
        "task",
        "args",
        "kwargs",
        "request_id",
        "state",
        "attempts",
        "last_error",
        "created_at",
        "next_attempt_at",
        "sent_at",
        "done_at",
    ]
    actions = ["retry_messages", "discard_messages"]
    show_full_result_count = False  # the table grows between prunes; no COUNT(*) per page
    list_per_page = 50

    @admin.display(description="last error")
    def error_preview(self, message: OutboxMessage) -> str:
        text = message.last_error
        return text if len(text) <= ERROR_PREVIEW_CHARS else format_html("{}…", text[:ERROR_PREVIEW_CHARS])

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # read-only fields; the actions below are the only way to act

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # "discard" deletes, and only dead or pending messages

    def has_act_permission(self, request) -> bool:
        return request.user.has_perm("project.change_outboxmessage")

    @admin.action(description="Retry selected dead or waiting messages now", permissions=["act"])
    def retry_messages(self, request, queryset):
        ids = selected_ids(self, request, queryset, limit=ACTION_MAX_MESSAGES, noun="messages")
        if ids is None:
            return
        retried = outbox_retry(message_ids=ids)
        skipped = len(ids) - retried
        self.message_user(request, f"{retried} message(s) will be published again.", messages.SUCCESS)
        if skipped:
            self.message_user(request, f"{skipped} sent or done message(s) left as they are.", messages.WARNING)

    @admin.action(description="Discard selected dead or waiting messages", permissions=["act"])
    def discard_messages(self, request, queryset):
        ids = selected_ids(self, request, queryset, limit=ACTION_MAX_MESSAGES, noun="messages")
        if ids is None:
            return
        discarded = outbox_discard(message_ids=ids)
        self.message_user(request, f"{discarded} message(s) discarded; their tasks will not run.", messages.SUCCESS)
        if len(ids) - discarded:
            self.message_user(request, f"{len(ids) - discarded} sent or done message(s) were kept.", messages.WARNING)
