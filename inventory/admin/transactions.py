"""The one place the inventory admin leans on a private Django API (`ModelAdmin._changeform_view`).

ModelAdmin.changeform_view wraps a POST in transaction.atomic(); a service inside it would run in
a savepoint without its bounded retries on lock timeouts and deadlocks (DESIGN §2). No public hook
turns that transaction off, so the mixin calls what changeform_view wraps, `_changeform_view`.
Django's changeform_view does nothing else (its CSRF decorator is also applied by admin_view,
which wraps every admin URL). tests/inventory/admin/test_transactions.py fails if Django changes
either of these, or if the service stops being the outermost transaction of the request.
"""


class ServiceTransactionMixin:
    """Let the service open the outermost transaction of a POSTed add or change form.

    The form calls the service while it validates (inventory.admin.forms.ServiceModelForm), so the only
    other write of the request is the admin's LogEntry, which needs no shared transaction.
    """

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        return self._changeform_view(request, object_id, form_url, extra_context)
