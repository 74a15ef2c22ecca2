"NLF from the command line with the stand-in; the real checkpoint (adapter and backbone encoder) when NLF_CHECKPOINT names one."
import os

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_py
from avatar_nb.localise import project
from avatar_nb.encoders import NLFBackboneEncoder, receptive_field_centre
from avatar_nb.nlf import load_nlf, run_nlf, write_nlf_standin


@pytest.fixture()
def standin(tmp_path):
    g = torch.Generator().manual_seed(0)
    return write_nlf_standin(tmp_path / "nlf.torchscript", (torch.rand(300, 3, generator=g) - 0.5) * torch.tensor([0.3, 1.0, 0.2]))


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


@pytest.mark.skipif(not os.environ.get("NLF_CHECKPOINT"), reason="set NLF_CHECKPOINT to an NLF .torchscript file")
def test_nlf_backbone_real_checkpoint():
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_nlf(os.environ["NLF_CHECKPOINT"], dev)
    if dev == "cpu": model = model.float()  # half-precision convolutions are a GPU thing
    for tap, s in (("stride8", 8), ("stride16", 16)):
        enc = NLFBackboneEncoder(model, tap)
        out = enc(torch.rand(2, 3, 256, 192, device=dev))
        assert out.shape == (2, enc.feat_dim, 256 // s, 192 // s) and torch.isfinite(out).all()
    # stride-8 stages have no squeeze-excitation, so a cell's receptive field is local: centred on its block
    enc = NLFBackboneEncoder(model.float(), "stride8")
    assert torch.equal(receptive_field_centre(enc, 256, (16, 16)), torch.tensor([132.0, 132.0]))
