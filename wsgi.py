"""The only module that builds an app at import: ``gunicorn wsgi:app``, ``flask --app wsgi``."""

from infra.app import create_app

app = create_app()
