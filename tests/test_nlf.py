"NLF adapter: the stand-in always; the real checkpoint when NLF_CHECKPOINT names one."
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_py
from avatar_nb.localise import project
from avatar_nb.nlf import load_nlf, run_nlf, write_nlf_standin, NLFError


@pytest.fixture()
def standin(tmp_path):
    g = torch.Generator().manual_seed(0)
    return write_nlf_standin(tmp_path / "nlf.torchscript", (torch.rand(300, 3, generator=g) - 0.5) * torch.tensor([0.3, 1.0, 0.2]))


def test_units_and_pixels_against_the_raw_output(standin):
    "Every conversion, checked against what the scripted model itself returned."
    model = load_nlf(standin)
    img = torch.zeros(1, 3, 64, 80, dtype=torch.uint8); img[0, :, 10:50, 30:45] = 255
    raw = model.detect_smpl_batched(img, model_name="smplx")
    ours = run_nlf(model, img)
    torch.testing.assert_close(ours.vertices3d[0], raw["vertices3d"][0][0] / 1000)
    torch.testing.assert_close(ours.trans[0], raw["trans"][0][0])  # trans is metres already
    torch.testing.assert_close(ours.vertices2d[0], raw["vertices2d"][0][0] + 0.5)
    torch.testing.assert_close(ours.vertex_uncertainties[0], raw["vertex_uncertainties"][0][0] / 1000)
    torch.testing.assert_close(ours.K[0, :2, 2], torch.tensor([40.0, 32.0]))  # (W/2, H/2)


def test_cli_preprocess_end_to_end(tmp_path, standin):
    frames = tmp_path / "frames"; frames.mkdir()
    masks = tmp_path / "masks"; masks.mkdir()
    for i in range(4):
        im = np.zeros((48, 64, 3), np.uint8); im[8:40, 10 + 8 * i:22 + 8 * i] = 220
        Image.fromarray(im).save(frames / f"{i:04d}.jpg", quality=95)
        Image.fromarray(((im[..., 0] > 0) * 255).astype(np.uint8)).save(masks / f"{i:04d}.png")
    out = tmp_path / "ds"
    r = run_py("-m", "avatar_nb", "preprocess", "--images", str(frames), "--masks", str(masks), "--nlf", str(standin),
               "--out", str(out), "test_every=2")
    assert r.returncode == 0, r.stderr
    assert "4 frames" in r.stdout and "0 without a person" in r.stdout, r.stdout
    import json
    meta = json.loads((out / "meta.json").read_text())
    assert meta["masks"] == "exact" and meta["body_model"] == "smplx"
    splits = json.loads((out / "splits.json").read_text())
    assert [f for f, _ in splits["test_pose"]] == ["0001", "0003"]
    z = np.load(out / "bodies.npz")
    assert z["vertices"].shape == (4, 300, 3) and z["body_pose"].shape == (4, 63)
    # a second run with --overwrite uses the cache; a bad checkpoint is a one-line error
    r2 = run_py("-m", "avatar_nb", "preprocess", "--images", str(frames), "--nlf", str(standin), "--out", str(out), "--overwrite")
    assert r2.returncode == 0 and "cached" in r2.stdout, r2.stdout + r2.stderr
    (tmp_path / "bad.torchscript").write_bytes(b"xx")
    r3 = run_py("-m", "avatar_nb", "preprocess", "--images", str(frames), "--nlf", str(tmp_path / "bad.torchscript"),
                "--out", str(tmp_path / "ds2"))
    assert r3.returncode == 2 and "bad.torchscript" in r3.stderr and "Traceback" not in r3.stderr
    assert not (tmp_path / "ds2").exists()


@pytest.mark.skipif(not os.environ.get("NLF_CHECKPOINT"), reason="set NLF_CHECKPOINT to a real NLF TorchScript file")
def test_real_checkpoint_projection_convention(tmp_path):
    "With the real model: project(vertices3d, K) lands on vertices2d in the project's convention."
    from avatar_nb.synth import SynthConfig, generate_dataset
    ds = tmp_path / "ds"
    generate_dataset(ds, SynthConfig(identities=1, poses=1, views=1, size=384))
    img = next((ds / "images").rglob("*.png"))
    model = load_nlf(os.environ["NLF_CHECKPOINT"], "cuda" if torch.cuda.is_available() else "cpu")
    people = run_nlf(model, [np.asarray(Image.open(img).convert("RGB"))])
    assert people.num_people == 1
    err = (project(people.vertices3d, people.K[people.image_index]) - people.vertices2d).norm(dim=-1)
    assert err.median() < 0.5, err.median()
