"""Import every model module so ``Base.metadata`` knows every table (Alembic, tests)."""

from decisioning import models as decision_models  # noqa: F401
from experiments import models as experiment_models  # noqa: F401
from infra import audit, auth_models, config_version  # noqa: F401
from infra.db import Base
from offers import models  # noqa: F401

metadata = Base.metadata
