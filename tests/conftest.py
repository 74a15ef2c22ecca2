import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_py(*args, cwd=None, env=None, timeout=600):
    "Run `python *args` in a fresh interpreter; returns the CompletedProcess."
    e = dict(os.environ, MPLBACKEND="Agg", **(env or {}))
    return subprocess.run([sys.executable, *args], cwd=cwd or ROOT, env=e, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="session")
def anny_body():
    from avatar_nb.body import load_body_model
    return load_body_model()


@pytest.fixture()
def tiny_model_dir(tmp_path):
    "A folder with tiny SMPL-X and SMPL model files in the smplx package's layout."
    from avatar_nb.body import write_tiny_model_file
    write_tiny_model_file(tmp_path / "smplx" / "SMPLX_NEUTRAL.npz", "smplx")
    write_tiny_model_file(tmp_path / "smpl" / "SMPL_NEUTRAL.pkl", "smpl")
    return tmp_path
