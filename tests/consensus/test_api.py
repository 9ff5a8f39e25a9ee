import os
import subprocess
import sys
from pathlib import Path

import llmlabel.consensus as consensus


def test_all_is_curated_and_importable():
    assert sorted(consensus.__all__) == consensus.__all__
    for name in consensus.__all__:
        assert getattr(consensus, name) is not None
    public = {n for n in dir(consensus) if not n.startswith("_")}
    modules = {
        "calibration",
        "correlation",
        "dawid_skene",
        "em",
        "errors",
        "policy",
        "votes",
        "multilabel",
        "taxonomy",
        "options",
        "result",
        "stopping",
    }
    assert public - modules == set(consensus.__all__)


def test_engine_imports_only_numpy_and_scipy():
    code = (
        "import sys, llmlabel.consensus, llmlabel.simulate; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'sqlmodel', 'sqlalchemy', 'fastapi', 'pydantic', 'litellm', 'httpx'}))"
    )
    src = str(Path(consensus.__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": src}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
