import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from llmlabel.testing.pytest_plugin import fake_llm, fake_llm_server

__all__ = ["fake_llm", "fake_llm_server"]
