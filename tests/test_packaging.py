"""`pip install .` gives a working Provisor: the wheel is built from a copy of the sources,
installed into a folder of its own and run from another working directory."""

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import zipfile

import requests

from tests.support import free_port, wait_for

ROOT = pathlib.Path(__file__).resolve().parent.parent
CODE = ("app", "actors", "modules", "proxy")
# source -> in the wheel (translations: the catalogs, .po and the compiled .mo)
BUNDLED = {"templates": "app/templates", "static": "app/static", "translations": "app/translations"}
TOP_FILES = ("pyproject.toml", "setup.py", "README.md", "LICENSE")


def _sources(dest):
    """The files a release is built from (no caches, no instance folder, no build output)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in (*CODE, *BUNDLED):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    for name in TOP_FILES:
        shutil.copy2(ROOT / name, dest / name)


def _expected_files():
    """Every source file and where the wheel must hold it."""
    expected = set()
    for name in CODE:
        for path in (ROOT / name).rglob("*.py"):
            expected.add(path.relative_to(ROOT).as_posix())
    for name, inside in BUNDLED.items():
        for path in (ROOT / name).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pot":
                expected.add(f"{inside}/{path.relative_to(ROOT / name).as_posix()}")
    return expected


def test_the_installed_wheel_serves_pages_and_static_files(tmp_path):
    source, dist, site, elsewhere = (tmp_path / n for n in ("src", "dist", "site", "cwd"))
    source.mkdir()
    elsewhere.mkdir()
    _sources(source)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", dist, source], check=True, timeout=300)
    (wheel,) = dist.glob("provisor-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    missing = sorted(_expected_files() - names)
    assert missing == [], "files left out of the wheel"
    assert not [
        n
        for n in names
        if n.startswith(("tests/", "bench/", "templates/", "static/", "translations/"))
    ]
    assert "app/translations/ru/LC_MESSAGES/messages.mo" in names
    subprocess.run([*pip, "install", "--no-deps", "--target", site, wheel], check=True, timeout=300)

    env = {
        **os.environ,
        "PYTHONPATH": str(site),
        "PROVISOR_INSTANCE_PATH": str(tmp_path / "instance"),
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("DATABASE_URL", "REDIS_URL", "SMTP_URL"):
        env.pop(name, None)
    where = subprocess.run(
        [
            sys.executable,
            "-c",
            "import app; print(app.__file__); print(app.bundled('templates'))",
        ],
        env=env,
        cwd=elsewhere,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert where == [str(site / "app" / "__init__.py"), str(site / "app" / "templates")]
    # installed, the instance folder defaults to the working directory's, not site-packages
    unset = {k: v for k, v in env.items() if k != "PROVISOR_INSTANCE_PATH"}
    instance = subprocess.run(
        [sys.executable, "-c", "from app import config; print(config.load()['INSTANCE_PATH'])"],
        env=unset,
        cwd=elsewhere,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert instance == str(elsewhere / "instance")

    port = free_port()
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 (the process writes it)
    proc = subprocess.Popen(
        [sys.executable, "-c", "from app.cli import main; main()", "serve", "--port", str(port)],
        env=env,
        cwd=elsewhere,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(base + "/login"), timeout=30, message="the installed serve")
        login = requests.get(base + "/login", timeout=5)
        assert login.status_code == 200 and 'name="password"' in login.text
        # the compiled Russian catalog is in the wheel and found there
        russian = requests.get(base + "/login", headers={"Accept-Language": "ru"}, timeout=5)
        assert "Войти" in russian.text and '<html lang="ru">' in russian.text
        css = requests.get(base + "/static/app.css", timeout=5)
        assert css.status_code == 200 and css.headers["Content-Type"].startswith("text/css")
        assert css.content == (ROOT / "static" / "app.css").read_bytes()
        htmx = requests.get(base + "/static/vendor/htmx-2.0.11/htmx.min.js", timeout=5)
        assert htmx.status_code == 200
        assert htmx.content == (ROOT / "static/vendor/htmx-2.0.11/htmx.min.js").read_bytes()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
    output = (tmp_path / "serve.log").read_text()
    assert proc.returncode == 0, output[-2000:]
    assert "Traceback" not in output
    assert (tmp_path / "instance" / "provisor.sqlite3").exists()


def _answers(url):
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False
