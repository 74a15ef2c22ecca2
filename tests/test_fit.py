"The fit on the command line: fit -> eval --avatar -> export --avatar on the tiny SMPL dataset, and its bad inputs."
import json

import numpy as np
import pytest

from avatar_nb.avatar import load_avatar_file
from avatar_nb.body import write_tiny_model_file
from avatar_nb.cli import main
from avatar_nb.data import write_tiny_dataset
from avatar_nb.ply import load_ply

FAST = ["--k", "1", "--sh-degree", "1", "--device", "cpu", "steps=4", "size=32", "batch=2", "progress=false"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("fit")
    model = write_tiny_model_file(d / "SMPL_NEUTRAL.pkl", "smpl")
    return d, model, write_tiny_dataset(d / "ds", model, width=48, height=64, n_frames=3)


def test_fit_eval_export(tiny, capsys):
    d, model, ds = tiny
    out = d / "avatar.npz"
    assert main(["fit", "--data", str(ds), "--out", str(out), "--body-model-path", str(model), *FAST]) == 0
    a = load_avatar_file(out, expect_body_model="smpl")
    assert a.provenance["body_correction"] == "params" and a.provenance["start"] == "template"
    assert set(a.params) >= {"global_orient", "body_pose", "transl"} and len(a.frames) == 2  # the training frames
    assert not (d / "avatar.npz.fit-state.pt").exists()  # done: no state left
    assert main(["eval", "--avatar", str(out), "--data", str(ds), "--out", str(d / "ev")]) == 0
    m = json.loads((d / "ev" / "metrics.json").read_text())
    assert m["test_pose (stored bodies)"]["images"] == 3 and 5 < m["test_pose (stored bodies)"]["psnr_crop"] < 60
    ply = d / "a.ply"
    assert main(["export", "--avatar", str(out), "--frame", str(a.frames[0]), "--out", str(ply)]) == 0
    s = load_ply(ply)
    assert s.means.shape == (a.num_gaussians, 3) and np.isfinite(s.means.numpy()).all()


def test_bad_inputs_are_named(tiny, capsys):
    d, model, ds = tiny
    assert main(["eval", "--avatar", str(d / "none.npz"), "--checkpoint", "x"]) == 2
    assert "exactly one of --checkpoint" in capsys.readouterr().err
    cut = d / "cut.npz"
    cut.write_bytes(b"PK\x03\x04 not a whole file")
    assert main(["eval", "--avatar", str(cut), "--data", str(ds)]) == 2
    assert f"{cut}: not a readable avatar file" in capsys.readouterr().err
    z = dict(np.load(ds / "bodies.npz"))
    verts_only = d / "verts_only"
    import shutil
    shutil.copytree(ds, verts_only)
    np.savez(verts_only / "bodies.npz", frame=z["frame"], identity=z["identity"], vertices=z["vertices"])
    out = d / "never.npz"
    assert main(["fit", "--data", str(verts_only), "--out", str(out), "--body-model-path", str(model), *FAST,
                 "body=params"]) == 2
    err = capsys.readouterr().err
    assert "bodies.npz" in err and "body=rigid" in err
    assert not out.exists() and not [p for p in d.iterdir() if p.name.startswith(".never")]  # nothing half-written


def test_several_people_one_process_each(tmp_path, capsys):
    "`fit --identities all --devices 2`: two people fitted by two processes at once, one avatar file each."
    ds = tmp_path / "ds"
    assert main(["synth", "--out", str(ds), "identities=3", "poses=3", "size=48", "views=4"]) == 0
    out = tmp_path / "people"
    fast = ["--k", "1", "--sh-degree", "1", "steps=3", "size=32", "batch=2", "body=rigid"]
    assert main(["fit", "--data", str(ds), "--out", str(out), "--identities", "all", "--devices", "2", *fast]) == 0
    res = json.loads((out / "fit_many.json").read_text())
    assert res["people"] == 2 and [j["rc"] for j in res["jobs"]] == [0, 0]  # person 2 is the held-out identity
    assert {j["slot"] for j in res["jobs"]} == {0, 1} and all(j["start_s"] < 1 for j in res["jobs"])  # at once
    for i in (0, 1):
        a = load_avatar_file(out / f"person{i}.npz")
        assert a.provenance["identity"] == i and a.provenance["body_correction"] == "rigid"
    assert main(["fit", "--data", str(ds), "--out", str(out), "--identities", "0,2", *fast]) == 2
    assert "--identities [2] have no images in split 'train'" in capsys.readouterr().err


def test_vertex_sigma_weights_the_body_prior(tiny):
    "bodies.npz's optional vertex_sigma (the estimator's uncertainty): read, checked, and the less certain vertices trusted less."
    import shutil
    from avatar_nb.body import load_body_model
    from avatar_nb.config import BodyConfig
    from avatar_nb.data import DatasetError, load_dataset_index
    from avatar_nb.fit import body_correction
    d, model, ds = tiny
    z = dict(np.load(ds / "bodies.npz"))
    T, V = z["vertices"].shape[:2]
    sigma = np.full((T, V), 0.02, np.float32)
    sigma[:, : V // 2] = 0.08  # half the body four times less certain
    root = d / "sigma"
    shutil.copytree(ds, root)
    np.savez(root / "bodies.npz", **z, vertex_sigma=sigma)
    index = load_dataset_index(root)
    assert index.vertex_sigma.shape == (T, V)
    corr = body_correction(index, "params", [0, 1], load_body_model(BodyConfig(model="smpl", model_path=str(model))))
    trust = corr.trust.numpy()
    np.testing.assert_allclose(trust[:, V // 2:] / trust[:, :1], 16.0, rtol=1e-5)  # weight 1 / sigma^2
    np.testing.assert_allclose(trust.mean(1), 1.0, rtol=1e-5)
    for bad, msg in ((sigma[:, :-1], "expected [T, V]"), (sigma * 0, "finite and > 0")):
        np.savez(root / "bodies.npz", **z, vertex_sigma=bad)
        with pytest.raises(DatasetError, match=msg.replace("[", r"\[").replace("]", r"\]")):
            load_dataset_index(root)


def test_fit_starts_from_the_settings_of_its_checkpoints_run(tiny, capsys, tmp_path):
    import torch
    from avatar_nb.config import config_to_yaml, load_config
    from avatar_nb.run import RunConfig
    from avatar_nb.train import stored_config
    d, model, ds = tiny
    run = load_config(schema=RunConfig, overrides=["fit.residual_reg=100", "fit.size=48"])
    ck = tmp_path / "weights_missing.ckpt"
    torch.save({"avatar_nb": {"config": config_to_yaml(run)}, "state_dict": {}}, ck)
    fit = stored_config(ck).fit
    assert (fit.residual_reg, fit.size, fit.steps) == (100.0, 48, run.fit.steps)
    assert main(["fit", "--data", str(ds), "--out", str(tmp_path / "a.npz"), "--checkpoint", str(ck), "--device", "cpu",
                 "steps=2"]) == 2  # the file holds no model
    out = capsys.readouterr()
    assert f"those of the run that wrote {ck} (steps={run.fit.steps}, size=48, residual_reg=100.0" in out.out
    assert not (tmp_path / "a.npz").exists()
