"""The only module that builds an app at import: ``gunicorn wsgi:app``, ``flask --app wsgi``."""

import gc

from carepilot.app import create_app

app = create_app()

# The objects alive now (modules, the app, SQLAlchemy's mappers: ~170,000) live as long as the
# process; freezing them keeps the cyclic collector from walking them on every full collection.
# A young generation of 2,000 objects keeps each collection under about a millisecond of
# holding the GIL (at 20,000 they took 3–10 ms, in the tail of every request in flight); bulk
# decisions pause the collector for the call (decisioning.api).
gc.freeze()
gc.set_threshold(2_000, 10, 10)
