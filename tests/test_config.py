"""Settings: one typed reader (app/config.py), the README's table agreeing with it, and a
bad value stopping every entry point with one line."""

import ast
import os
import pathlib
import re
import subprocess
import sys

import pytest

from app import config, create_app
from tests.support import free_port

ROOT = pathlib.Path(__file__).resolve().parent.parent
BIN = os.path.dirname(sys.executable)


def readme_settings():
    """{name: default cell without backticks} of the README's settings table."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        names = re.findall(r"`([A-Z0-9_]+)`", cells[0])
        assert len(names) == 1, f"one setting per row: {line}"
        assert names[0] not in rows, f"{names[0]} twice in the README"
        rows[names[0]] = cells[1].replace("`", "")
    return rows


def test_readme_table_lists_every_setting_with_its_default():
    documented = readme_settings()
    declared = {s.documented_name: s for s in config.SETTINGS.values()}
    assert sorted(set(declared) - set(documented)) == [], "settings missing from the README"
    assert sorted(set(documented) - set(declared)) == [], "README rows that are no setting"
    for name, setting in declared.items():
        assert documented[name] == setting.shown_default, name
        assert setting.doc and "\n" not in setting.doc, name


def test_every_setting_is_read_through_the_reader():
    """No module outside app/config.py reads the environment."""
    offenders = []
    for folder in ("app", "actors", "modules", "proxy"):
        for path in (ROOT / folder).rglob("*.py"):
            if path == ROOT / "app" / "config.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv"):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_defaults_and_both_names():
    values = config.load(environ={})
    for name, setting in config.SETTINGS.items():
        if setting.default is not None:
            assert values[name] == setting.default, name
    assert values["INSTANCE_PATH"] == str(ROOT / "instance")  # a source checkout
    assert values["DATABASE_URL"] == f"sqlite:///{ROOT}/instance/provisor.sqlite3"
    assert config.load(environ={"SWEEP_INTERVAL": " 7 "})["SWEEP_INTERVAL"] == 7
    both = {"PROVISOR_SWEEP_INTERVAL": "3", "SWEEP_INTERVAL": "9"}
    assert config.load(environ=both)["SWEEP_INTERVAL"] == 3  # the prefixed one wins
    assert config.load(environ={"SANDBOX_PAYMENTS": "Yes"})["SANDBOX_PAYMENTS"] is True
    assert config.load(environ={"ALLOW_REGISTRATION": "off"})["ALLOW_REGISTRATION"] is False
    assert config.load(environ={"PROVISOR_LOG_LEVEL": "debug"})["LOG_LEVEL"] == "DEBUG"
    assert config.load(environ={"SWEEP_INTERVAL": ""})["SWEEP_INTERVAL"] == 15  # empty = unset
    # the generic names of the prefixed-only settings are not read
    assert config.load(environ={"LOG_LEVEL": "DEBUG"})["LOG_LEVEL"] == "INFO"
    assert config.load(environ={"DB_POOL_SIZE": "abc"})["DB_POOL_SIZE"] == 32
    instance = config.load(environ={"PROVISOR_INSTANCE_PATH": "/tmp/x/inst"})
    assert instance["DATABASE_URL"] == "sqlite:////tmp/x/inst/provisor.sqlite3"


@pytest.mark.parametrize(
    "environ, message",
    [
        ({"SWEEP_INTERVAL": "abc"}, 'SWEEP_INTERVAL must be a whole number ≥ 1, got "abc"'),
        ({"SWEEP_INTERVAL": "0"}, 'SWEEP_INTERVAL must be a whole number ≥ 1, got "0"'),
        ({"PROVISOR_SWEEP_INTERVAL": "1.5"}, "PROVISOR_SWEEP_INTERVAL must be a whole number ≥ 1"),
        ({"PAGE_SIZE": "0"}, 'PAGE_SIZE must be a whole number from 1 to 1000, got "0"'),
        ({"WORKER_THREADS": "1000"}, "WORKER_THREADS must be a whole number from 1 to 256"),
        ({"SWEEP_GRACE": "-1"}, 'SWEEP_GRACE must be a whole number ≥ 0, got "-1"'),
        ({"PROVISOR_DB_POOL_SIZE": "many"}, "PROVISOR_DB_POOL_SIZE must be a whole number"),
        ({"ARGON2_MEMORY_COST": "8"}, "ARGON2_MEMORY_COST must be a whole number ≥ 32"),
        (
            {"SANDBOX_PAYMENTS": "maybe"},
            'SANDBOX_PAYMENTS must be true or false (1/true/yes/on or 0/false/no/off), got "maybe"',
        ),
        (
            {"REDIS_URL": "localhost:6379"},
            "REDIS_URL must be a URL starting with redis://, rediss:// or unix://",
        ),
        ({"DATABASE_URL": "mysql://db/x"}, "DATABASE_URL must be a URL starting with sqlite://"),
        (
            {"SMTP_URL": "http://mailer:hunter2@mail.example"},
            'SMTP_URL must be a URL starting with smtp://, smtps:// or smtp+starttls://, got "http://mailer:***@mail.example"',
        ),
        (
            {"PROVISOR_LOG_LEVEL": "loud"},
            'PROVISOR_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got "loud"',
        ),
    ],
)
def test_a_bad_value_names_the_setting_and_the_rule(environ, message):
    with pytest.raises(config.SettingError) as info:
        config.load(environ=environ)
    text = info.value.format_message()
    assert text.startswith(message), text
    assert "\n" not in text
    assert "hunter2" not in text


def test_test_config_overrides_follow_the_same_rules(tmp_path):
    app = create_app(
        {
            "DATABASE_URL": f"sqlite:///{tmp_path}/p.sqlite3",
            "SECRET_KEY": "x",
            "PAYMENT_WEBHOOK_SECRET": "x",
            "LEASE_GRACE": 2,
            "SWEEP_INTERVAL": "4",
            "SANDBOX_PAYMENTS": True,
        }
    )
    assert app.config["LEASE_GRACE"] == 2 and app.config["SWEEP_INTERVAL"] == 4
    assert app.config["SANDBOX_PAYMENTS"] is True
    with pytest.raises(config.SettingError, match="SWEEP_INTERVAL must be a whole number ≥ 1"):
        create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/p.sqlite3", "SWEEP_INTERVAL": 0})
    with pytest.raises(config.SettingError, match="WORKER_THREADS must be a whole number"):
        create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/p.sqlite3", "WORKER_THREADS": "x"})


def _env(tmp_path, **settings):
    env = {**os.environ, "PROVISOR_INSTANCE_PATH": str(tmp_path / "instance"), **settings}
    for name in ("DATABASE_URL", "REDIS_URL", "SMTP_URL"):
        env.pop(name, None)
    return env


BAD = 'SWEEP_INTERVAL must be a whole number ≥ 1, got "abc"'


@pytest.mark.parametrize(
    "argv",
    [
        ["provisor", "ops", "list"],
        ["flask", "--app", "app", "ops", "list"],
        ["provisor", "scheduler"],
        ["flask", "--app", "app", "scheduler"],
        ["provisor", "serve"],
    ],
    ids=" ".join,
)
def test_both_clis_stop_with_one_line(tmp_path, argv):
    result = subprocess.run(
        [f"{BIN}/{argv[0]}", *argv[1:]],
        env=_env(tmp_path, SWEEP_INTERVAL="abc"),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr == f"Error: {BAD}\n"
    assert result.stdout == ""


def test_gunicorn_and_dramatiq_stop_saying_why(tmp_path):
    env = _env(tmp_path, SWEEP_INTERVAL="abc")
    web = subprocess.run(
        [f"{BIN}/gunicorn", "--bind", f"127.0.0.1:{free_port()}", "app:create_app()"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert web.returncode != 0
    assert f"SettingError: {BAD}" in web.stderr
    worker = subprocess.run(
        [f"{BIN}/dramatiq", "actors", "--processes", "1", "--threads", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert worker.returncode != 0
    # the worker process's lines and the main process's come in either order
    assert f"\nactors.broker.BadSettings: {BAD}\n" in worker.stderr, worker.stderr[-2000:]
