class ReadOnlyAdminMixin:
    """For a ModelAdmin or an inline whose records staff may look at but never add, change or
    delete there (ledgers, keys, job reports): those rows change only through services."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
