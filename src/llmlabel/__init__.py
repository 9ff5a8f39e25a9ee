"""llmlabel: grow labeled datasets cheaply; LLM labelers and humans vote, calibrated consensus
decides, reviewers settle the rest.

The package root stays light (the CLI, the server and the pure consensus engine all import
it): entry points live in their modules, e.g. ``llmlabel.config.load_config``,
``llmlabel.api.create_app``, ``llmlabel.consensus.DawidSkene``, ``llmlabel.testing.FakeLLMServer``.
"""

from llmlabel.errors import (
    AuthenticationError,
    BudgetExceededError,
    ConfigError,
    ConflictError,
    ImportRowsError,
    InputError,
    LabelError,
    LLMLabelError,
    NotFoundError,
    PermissionDeniedError,
    ProviderError,
    StorageError,
)

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "BudgetExceededError",
    "ConfigError",
    "ConflictError",
    "ImportRowsError",
    "InputError",
    "LLMLabelError",
    "LabelError",
    "NotFoundError",
    "PermissionDeniedError",
    "ProviderError",
    "StorageError",
    "__version__",
]
