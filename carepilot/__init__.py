"""The composition root: where the domain packages are assembled into a running product.

The app factory (``carepilot.app``), the ``flask`` commands (``carepilot.cli``), ``make run``
(``carepilot.launcher``), the worker and its schedule (``carepilot.worker``,
``carepilot.cron``) and the model registry that Alembic reads (``carepilot.model_registry``).
It sits on top of every other package and nothing below imports it: only ``wsgi.py``,
``migrations/env.py``, the console scripts, the tests and the benchmarks do.
"""
