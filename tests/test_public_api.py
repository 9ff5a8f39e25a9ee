"""The package root's public names are deliberate: adding or dropping one is a decision."""

from __future__ import annotations

import subprocess
import sys

import llmlabel

EXPECTED = {
    "AuthenticationError", "BudgetExceededError", "ConfigError", "ConflictError", "ImportRowsError",
    "InputError", "LLMLabelError", "LabelError", "NotFoundError", "PermissionDeniedError", "ProviderError",
    "StorageError", "__version__",
}


def test_root_exports_exactly_the_curated_names() -> None:
    assert set(llmlabel.__all__) == EXPECTED
    for name in llmlabel.__all__:
        assert hasattr(llmlabel, name), name


def test_every_error_is_an_llmlabel_error() -> None:
    for name in EXPECTED - {"__version__", "LLMLabelError"}:
        assert issubclass(getattr(llmlabel, name), llmlabel.LLMLabelError), name


def test_importing_the_root_pulls_in_nothing_heavy() -> None:
    code = "import sys, llmlabel; print(sorted(m for m in ('numpy', 'sqlalchemy', 'fastapi', 'litellm', 'pydantic') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_the_package_ships_type_information() -> None:
    from importlib import resources

    assert resources.files("llmlabel").joinpath("py.typed").is_file()
