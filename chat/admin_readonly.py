"""Read-only admin pages: the pool (also the pairing history), the processes and the dialogs
(purge_dialogs deletes old ones) are records, not forms."""


class ReadOnlyAdminMixin:
    """No add, change or delete; actions with their own permissions still work."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
