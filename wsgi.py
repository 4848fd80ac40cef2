"""The only module that builds an app at import: ``gunicorn wsgi:app``, ``flask --app wsgi``."""

import gc

from infra.app import create_app

app = create_app()

# The objects alive now (modules, the app, SQLAlchemy's mappers: ~170,000) live as long as the
# process; freezing them keeps the cyclic collector from walking them on every full collection,
# and a larger young generation lets a 10,000-contact bulk decision allocate without a
# collection every 700 objects. Together about 15% off a bulk call (bench/decision_latency.py).
gc.freeze()
gc.set_threshold(20_000, 10, 10)
