"""Schema upgrades apply in order on SQLite and PostgreSQL, from any earlier version."""

import pytest

from app import create_app, schema
from app.db import database


def _upgrade_in_steps(url):
    app = create_app({"DATABASE_URL": url, "SECRET_KEY": "x", "PAYMENT_WEBHOOK_SECRET": "x"})
    with app.app_context():
        all_migrations = schema.MIGRATIONS
        try:
            schema.MIGRATIONS = all_migrations[:1]
            assert schema.upgrade() == [1]
            with database.connection_context():
                # as version 1 was first released: without what version 3 adds
                database.execute_sql("DROP INDEX attempt_finished_at")
                database.execute_sql("ALTER TABLE operation DROP COLUMN redispatches")
                assert "redispatches" not in {c.name for c in database.get_columns("operation")}
        finally:
            schema.MIGRATIONS = all_migrations
        assert schema.upgrade() == list(range(2, len(all_migrations) + 1))
        assert schema.upgrade() == []  # nothing twice
        with database.connection_context():
            assert schema.current_version() == schema.latest_version()
            columns = {c.name for c in database.get_columns("operation")}
            assert "redispatches" in columns
            assert "proxy_client_side" in database.get_tables()
            indexes = {tuple(i.columns) for i in database.get_indexes("attempt")}
            assert ("finished_at",) in indexes
    database.close()


def test_upgrade_on_sqlite(tmp_path):
    _upgrade_in_steps(f"sqlite:///{tmp_path}/old.sqlite3")


@pytest.mark.postgres
def test_upgrade_on_postgres(postgres_url):
    _upgrade_in_steps(postgres_url)
