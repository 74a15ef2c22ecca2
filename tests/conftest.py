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


@pytest.fixture()
def tiny_run(tmp_path, tiny_model_dir):
    "Overrides for a training run on the tiny SMPL-layout dataset: seconds per run."
    from avatar_nb.data import write_tiny_dataset
    model = tiny_model_dir / "smpl" / "SMPL_NEUTRAL.pkl"
    write_tiny_dataset(tmp_path / "data", model, width=48, height=64, n_frames=4)
    return tmp_path, [
        "body.model=smpl", f"body.model_path={model}", "template.k=2", "template.sh_degree=1",
        f"dataset.root={tmp_path / 'data'}", "dataset.generate=false", "dataset.val_split=test_pose",
        "data.size=32", "data.cache_dir=null", "model.encoder.width=8", "model.encoder.out_channels=16",
        "model.encoder.z_dim=8", "model.encoder.id_hidden=16", "model.decoder.hidden=32",
        "loss.lpips_weight=0", "trainer.batch_size=2", "trainer.val_every=0", "trainer.sample_every=0",
        "trainer.log_every=1", "trainer.threads=1", "trainer.background=random", "trainer.accelerator=cpu"]


def train_tiny(overrides, **kw):
    "`train` on overrides, quietly."
    from avatar_nb.train import load_run_config, train
    return train(load_run_config(overrides=overrides), enable_progress_bar=False, enable_model_summary=False, **kw)
