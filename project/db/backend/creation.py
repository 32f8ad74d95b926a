"""The test database behind a transaction-mode pooler: created, migrated and dropped over the
direct connection (DATABASE_DIRECT_URL), the tests themselves through the pooler.

Migrations need a session (a non-atomic migration's `SET statement_timeout = 0` would otherwise
stay on a pooled server connection and reach the next client), and the new database needs the
limits as its own defaults before anything connects through the pooler (project.db.pooler).
Dropping it meets the pooler's idle server connections to it (PgBouncer keeps them for
`server_idle_timeout`), which hold no transaction in transaction mode: `DROP DATABASE ... WITH
(FORCE)` ends them, and PgBouncer discards a server connection that was closed under it.
"""

import contextlib

from django.db.backends.postgresql import creation

from project.db.pooler import timeout_statements

# The keys of a settings dict that say where and how to connect, swapped for the direct ones.
_CONNECTION_KEYS = ("USER", "PASSWORD", "HOST", "PORT", "OPTIONS")


class DatabaseCreation(creation.DatabaseCreation):
    def create_test_db(self, *args, **kwargs):
        settings_dict = self.connection.settings_dict
        if not settings_dict.get("POOLER"):
            return super().create_test_db(*args, **kwargs)
        self._direct_name = settings_dict["DIRECT"]["NAME"]
        with self._direct():
            test_database_name = super().create_test_db(*args, **kwargs)
            with self.connection.cursor() as cursor:
                for statement in timeout_statements(test_database_name, self._quote_name):
                    cursor.execute(statement)
        settings_dict["DIRECT"]["NAME"] = test_database_name
        return test_database_name

    def _destroy_test_db(self, test_database_name, verbosity):
        settings_dict = self.connection.settings_dict
        if not settings_dict.get("POOLER"):
            return super()._destroy_test_db(test_database_name, verbosity)
        self.connection.close_pool()
        settings_dict["DIRECT"]["NAME"] = getattr(self, "_direct_name", settings_dict["NAME"])
        with self._direct(), self._nodb_cursor() as cursor:
            cursor.execute(f"DROP DATABASE {self._quote_name(test_database_name)} WITH (FORCE)")

    @contextlib.contextmanager
    def _direct(self):
        """The connection's settings pointed at PostgreSQL itself, with session options, for the
        duration; the database name (which creation changes to the test one) is left as it ends."""
        connection = self.connection
        settings_dict = connection.settings_dict
        saved = {key: settings_dict[key] for key in (*_CONNECTION_KEYS, "POOLER", "DISABLE_SERVER_SIDE_CURSORS")}
        self._reconnect()
        direct = settings_dict["DIRECT"]
        # Without the pool too: creation opens and closes a connection or two, nothing to keep.
        settings_dict.update({key: direct[key] for key in _CONNECTION_KEYS})
        settings_dict["OPTIONS"] = dict(direct["OPTIONS"])
        settings_dict.pop("POOLER")
        settings_dict["DISABLE_SERVER_SIDE_CURSORS"] = False
        try:
            yield
        finally:
            self._reconnect()
            settings_dict.update(saved)

    def _reconnect(self) -> None:
        """Close the connection and the pool: the next connection is made with the settings of then."""
        self.connection.close()
        self.connection.close_pool()
