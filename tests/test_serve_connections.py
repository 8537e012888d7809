"""``provisor serve``'s web server (waitress, in process here): its request threads keep
their SQLite connection between requests, as the embedded worker's threads do, and leave
no transaction open between them."""

import sqlite3
import threading

import requests
from peewee import SqliteDatabase
from waitress import wasyncore

from app import embedded


def test_the_request_threads_keep_their_sqlite_connection(app, tmp_path, monkeypatch):
    opened = []
    real_connect = SqliteDatabase._connect

    def counting_connect(self):
        opened.append(threading.get_ident())
        return real_connect(self)

    monkeypatch.setattr(SqliteDatabase, "_connect", counting_connect)
    server = embedded.web_server(
        app, "127.0.0.1", 0, threads=2, connection_limit=20, channel_timeout=5, backlog=16
    )
    running = threading.Thread(target=server.run, daemon=True)
    running.start()
    try:
        base = f"http://127.0.0.1:{server.effective_port}"
        with requests.Session() as client:
            pages = [client.get(f"{base}/login", timeout=10) for _ in range(30)]
        assert {page.status_code for page in pages} == {200}
        # one connection per request thread that answered, none per request
        assert 1 <= len(opened) <= 2, opened
        assert len(set(opened)) == len(opened)
        # nothing left open between requests: another connection takes the write lock at once
        other = sqlite3.connect(tmp_path / "provisor.sqlite3", timeout=0)
        other.execute("BEGIN IMMEDIATE")
        other.execute(
            "INSERT INTO department (name, created_at) VALUES ('kept-connection check', '2026-12-07')"
        )
        other.rollback()
        other.close()
    finally:
        server.task_dispatcher.shutdown()
        wasyncore.close_all(server._map)  # the server, its trigger and open channels
        running.join(10)
    assert not running.is_alive()
