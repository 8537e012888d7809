"""Which files the distribution holds; everything else is in pyproject.toml.

The source tree keeps templates/, static/ and translations/ at the top (beside app/, actors/,
modules/, proxy/); the wheel puts them inside the app package (``app/templates``,
``app/static``, ``app/translations``: the catalogs, ``.po`` and the compiled ``.mo``),
where ``app.bundled`` finds them in an installed copy. Code packages are found
automatically, including folders without ``__init__.py`` such as ``app/migrations``
(migration scripts loaded by path), so a new one needs no change here.
"""

from setuptools import find_namespace_packages, setup

CODE = ["app", "actors", "modules", "proxy"]

setup(
    packages=find_namespace_packages(
        include=[pattern for name in CODE for pattern in (name, f"{name}.*")],
        exclude=["*.__pycache__"],
    )
    + ["app.templates", "app.static", "app.translations"],
    package_dir={
        "app.templates": "templates",
        "app.static": "static",
        "app.translations": "translations",
    },
    package_data={
        "app.templates": ["**/*.html"],
        "app.static": ["**/*"],
        "app.translations": ["*/LC_MESSAGES/*.po", "*/LC_MESSAGES/*.mo"],
        "app.migrations": ["*.py"],
    },
)
