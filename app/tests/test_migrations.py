"""Migrations up and down on a database that holds data."""

import psycopg2
from flask_migrate import downgrade, upgrade


def rows(url, query):
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(query)
        return cur.fetchall()


def columns(url):
    return {r[0] for r in rows(url, "SELECT column_name FROM information_schema.columns WHERE table_name='notes'")}


def test_up_and_down_with_data(make_app, database_url):
    app = make_app()
    with app.app_context():
        upgrade(revision="0001")
        assert "slug" not in columns(database_url)
        with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
            cur.execute("INSERT INTO notes (title, body) VALUES ('Hello, World!', 'a'), ('¿Qué?', 'b'), "
                        "('Release v1.4.2 notes', 'c')")

        upgrade()  # 0002 changes the table that now has data
        assert rows(database_url, "SELECT title, slug FROM notes ORDER BY id") == [
            ("Hello, World!", "hello-world"), ("¿Qué?", "qu"), ("Release v1.4.2 notes", "release-v1-4-2-notes")]
        assert rows(database_url, "SELECT is_nullable FROM information_schema.columns "
                                  "WHERE table_name='notes' AND column_name='slug'") == [("NO",)]
        assert rows(database_url, "SELECT version_num FROM alembic_version") == [("0002",)]

        downgrade(revision="0001")
        assert "slug" not in columns(database_url)
        assert rows(database_url, "SELECT count(*) FROM notes") == [(3,)]

        upgrade()
        assert rows(database_url, "SELECT count(*) FROM notes WHERE slug <> ''") == [(3,)]
        downgrade(revision="base")
        assert rows(database_url, "SELECT to_regclass('notes')") == [(None,)]
