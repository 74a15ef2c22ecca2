"The synthetic dataset generator: the on-disk format, masks against the body, splits, determinism, atomic writes."
import json
import os
import time

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_py
from avatar_nb.localise import project, transform_points
from avatar_nb.people import PART_NAMES, vertex_parts
from avatar_nb.synth import SynthConfig, generate_dataset
import avatar_nb.synth as synth

TINY = dict(identities=2, poses=4, views=3, size=128, test_poses=1, test_views=1, val_fraction=0.25)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    "Two people (one held out), 4 poses (one held out), 3 cameras (one held out), 128 x 128."
    root = tmp_path_factory.mktemp("synth") / "ds"
    summary = generate_dataset(root, SynthConfig(**TINY))
    return root, summary


def load(root):
    meta = json.loads((root / "meta.json").read_text())
    cams = json.loads((root / "cameras.json").read_text())
    splits = json.loads((root / "splits.json").read_text())
    bodies = dict(np.load(root / "bodies.npz"))
    return meta, cams, splits, bodies


def test_layout_and_every_file(tiny, anny_body):
    root, summary = tiny
    assert sorted(p.name for p in root.iterdir()) == ["bodies.npz", "cameras.json", "images", "masks", "meta.json", "splits.json"]
    umask = os.umask(0); os.umask(umask)
    assert root.stat().st_mode & 0o777 == 0o777 & ~umask  # the usual permissions, not a temporary folder's owner-only
    meta, cams, splits, z = load(root)
    assert (meta["format"], meta["version"], meta["body_model"], meta["source"], meta["masks"]) == \
        ("avatar_nb-dataset", 1, "anny", "synthetic", "coverage")
    assert meta["config"]["seed"] == 0 and meta["config"]["poses"] == 4
    # bodies.npz: T frames, Anny's parameter names, float32 parameters
    T, V, J = 8, anny_body.num_vertices, len(anny_body.bone_labels)
    assert set(z) == {"frame", "identity", "vertices", "pose", "phenotype", "transl"}
    assert z["frame"].tolist() == [f"{i:06d}" for i in range(T)] and z["identity"].tolist() == [0] * 4 + [1] * 4
    assert z["identity"].dtype == np.int64
    shapes = {"vertices": (T, V, 3), "pose": (T, J, 3), "phenotype": (T, 6), "transl": (T, 3)}
    for k, s in shapes.items():
        assert z[k].shape == s and z[k].dtype == np.float32, (k, z[k].shape, z[k].dtype)
    assert ((z["phenotype"] >= 0) & (z["phenotype"] <= 1)).all()
    with torch.no_grad():
        again = anny_body(**{k: torch.from_numpy(z[k]) for k in ("pose", "phenotype", "transl")}).vertices
    torch.testing.assert_close(again, torch.from_numpy(z["vertices"]), atol=1e-4, rtol=0)
    assert np.abs(z["vertices"][:, :, 1].min(1)).max() < 1e-5  # standing on the floor y = 0
    # cameras.json: K, viewmat (a rotation plus translation), size
    assert sorted(cams) == ["cam_00", "cam_01", "cam_02"]
    for c in cams.values():
        K, E = np.array(c["K"]), np.array(c["viewmat"])
        assert K.shape == (3, 3) and E.shape == (4, 4) and (c["width"], c["height"]) == (128, 128)
        np.testing.assert_allclose(K[:2, 2], [64, 64])  # principal point at the image centre (W/2, H/2)
        np.testing.assert_allclose(E[:3, :3] @ E[:3, :3].T, np.eye(3), atol=1e-6)
        np.testing.assert_allclose(E[3], [0, 0, 0, 1])
    # splits.json: every entry has its image and mask, and nothing else is on disk
    listed = {(f, c) for es in splits.values() for f, c in es}
    assert sum(map(len, splits.values())) == len(listed) == T * 3 == summary["images"]
    on_disk = {(p.stem, p.parent.name) for p in (root / "images").rglob("*.png")}
    assert on_disk == listed == {(p.stem, p.parent.name) for p in (root / "masks").rglob("*.png")}
    for f, c in sorted(listed)[:6]:
        img, mask = Image.open(root / "images" / c / f"{f}.png"), Image.open(root / "masks" / c / f"{f}.png")
        assert (img.mode, img.size, mask.mode, mask.size) == ("RGB", (128, 128), "L", (128, 128))


def test_masks_are_covered_fractions_of_the_silhouette(tiny, anny_body):
    root, _ = tiny
    body = vertex_parts(anny_body) != PART_NAMES.index("hand")  # fingers are thinner than a pixel here
    meta, cams, splits, z = load(root)
    c = cams["cam_00"]  # in front of the person
    K, E = torch.tensor(c["K"], dtype=torch.float64), torch.tensor(c["viewmat"], dtype=torch.float64)
    for t, f in enumerate(z["frame"]):
        mask = np.array(Image.open(root / "masks" / "cam_00" / f"{f}.png"))
        img = np.array(Image.open(root / "images" / "cam_00" / f"{f}.png"))
        assert {0, 255} <= set(np.unique(mask)) and ((mask > 0) & (mask < 255)).mean() > 0.002  # soft edges
        fg = mask >= 128  # at least half the pixel covered, as the readers threshold
        assert 0.03 < fg.mean() < 0.5
        assert (img[mask == 0] == 255).all() and not (img[fg] == 255).all(axis=-1).any()  # white background only off the body
        uv = project(transform_points(E, torch.from_numpy(z["vertices"][t]).double()), K).floor().long().numpy()
        assert ((uv >= 0) & (uv < 128)).all()
        grown = fg.copy()
        for axis in (0, 1):
            for s in (1, -1): grown |= np.roll(fg, s, axis)
        on, near_on = fg[uv[:, 1], uv[:, 0]][body], grown[uv[:, 1], uv[:, 0]][body]
        # vertices on the silhouette may miss their pixel's centre, by less than a pixel
        assert on.mean() > 0.85 and near_on.mean() > 0.995, (f, on.mean(), near_on.mean())
        # and every mask pixel is within 2 pixels of a projected vertex
        hit = np.zeros_like(fg)
        hit[uv[:, 1], uv[:, 0]] = True
        near = hit.copy()
        for dy in range(-2, 3):
            for dx in range(-2, 3): near |= np.roll(np.roll(hit, dy, 0), dx, 1)
        assert near[fg].mean() > 0.98


def test_images_are_textured_and_change_with_pose(tiny):
    root, _ = tiny
    imgs = [np.array(Image.open(root / "images" / "cam_00" / f"{f:06d}.png")) for f in range(4)]
    fg = [np.array(Image.open(root / "masks" / "cam_00" / f"{f:06d}.png")) == 255 for f in range(4)]
    for im, m in zip(imgs, fg):
        assert im.std() > 10 and len(np.unique(im[m], axis=0)) > 100  # shaded, patterned, not flat
    for a in range(4):
        for b in range(a + 1, 4):
            assert (fg[a] != fg[b]).mean() > 0.002, (a, b)  # different poses, different silhouettes
    # the two people look different
    other = np.array(Image.open(root / "images" / "cam_00" / "000004.png"))
    assert np.abs(other.astype(int) - imgs[0]).mean() > 2


def test_splits_are_disjoint(tiny):
    root, _ = tiny
    meta, cams, splits, z = load(root)
    assert set(splits) == {"train", "val", "test_view", "test_pose", "test_identity"}
    pose_of = {f: meta["frames"][f]["pose"] for f in meta["frames"]}
    ident = {f: meta["frames"][f]["identity"] for f in meta["frames"]}
    train = splits["train"] + splits["val"]  # val: training poses and cameras, other combinations
    assert not {tuple(e) for e in splits["train"]} & {tuple(e) for e in splits["val"]}
    train_poses, train_cams = {pose_of[f] for f, _ in train}, {c for _, c in train}
    assert len(train_poses) == 3 and train_cams == {"cam_00", "cam_02"}
    # held-out poses: neither their names nor their parameters occur in training
    assert not {pose_of[f] for f, _ in splits["test_pose"]} & train_poses
    row = {f: i for i, f in enumerate(z["frame"])}
    for f, _ in splits["test_pose"]:
        for g in {g for g, _ in train}:
            assert np.abs(z["pose"][row[f]] - z["pose"][row[g]]).max() > 0.05
    # held-out views: cameras never seen in training, at training poses
    assert {c for _, c in splits["test_view"]} == {"cam_01"}
    assert {pose_of[f] for f, _ in splits["test_view"]} <= train_poses
    # held-out identity: never in training
    assert {ident[f] for f, _ in splits["test_identity"]} == {1} and {ident[f] for f, _ in train} == {0}
    # each image in exactly one split
    entries = [tuple(e) for es in splits.values() for e in es]
    assert len(entries) == len(set(entries))


def test_deterministic_from_seed(tmp_path, monkeypatch):
    cfg = dict(poses=2, views=2, size=48, test_poses=1)
    generate_dataset(tmp_path / "a", SynthConfig(seed=0, **cfg))
    generate_dataset(tmp_path / "c", SynthConfig(seed=1, **cfg))
    with monkeypatch.context() as m:  # a later run: file timestamps (e.g. inside the npz) must not leak into the bytes
        m.setattr(time, "time", lambda: 2.0e9)
        generate_dataset(tmp_path / "b", SynthConfig(seed=0, **cfg))
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 4 + 2 * 2 * 2
    for p in files:
        assert (tmp_path / "a" / p).read_bytes() == (tmp_path / "b" / p).read_bytes(), p
    differ = [p for p in files if (tmp_path / "a" / p).read_bytes() != (tmp_path / "c" / p).read_bytes()]
    assert {str(p) for p in differ} >= {"images/cam_00/000000.png", "bodies.npz", "meta.json"}


def test_failure_leaves_nothing(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = synth.PosedScene.render

    def flaky(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 3: raise OSError("disk full (injected)")
        return real(self, *a, **kw)

    monkeypatch.setattr(synth.PosedScene, "render", flaky)
    with pytest.raises(OSError, match="injected"):
        generate_dataset(tmp_path / "ds", SynthConfig(poses=2, views=2, size=32, test_poses=1))
    assert calls["n"] == 3  # two views were written, the third failed
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temporary folder


def test_overwrite_refused_then_replaced(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    (root / "keep.txt").write_text("mine")
    cfg = SynthConfig(poses=1, views=1, size=32)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        generate_dataset(root, cfg)
    assert [p.name for p in root.iterdir()] == ["keep.txt"]
    generate_dataset(root, cfg, overwrite=True)
    assert not (root / "keep.txt").exists() and (root / "meta.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no temporary or old folder left
    empty = tmp_path / "empty"
    empty.mkdir()
    generate_dataset(empty, cfg)  # an empty folder is not a dataset: no overwrite needed
    assert (empty / "splits.json").exists()


def test_bad_config_names_the_field(tmp_path):
    for kw, needle in ((dict(poses=0), "synth.poses"), (dict(size=4), "synth.size"), (dict(val_fraction=1.0), "synth.val_fraction")):
        with pytest.raises(ValueError, match=needle):
            generate_dataset(tmp_path / "x", SynthConfig(**kw))
    assert not (tmp_path / "x").exists()


def test_cli_synth(tmp_path):
    out = tmp_path / "cli"
    args = ("-m", "avatar_nb", "synth", "--out", str(out), "poses=2", "views=2", "size=32", "seed=3")
    r = run_py(*args)
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "meta.json").read_text())["config"]["seed"] == 3
    assert len(list((out / "images").rglob("*.png"))) == 4
    r2 = run_py(*args)  # the folder now holds a dataset
    assert r2.returncode == 2 and "overwrite" in r2.stderr and "Traceback" not in r2.stderr


def test_one_pose_says_which_splits_it_lacks(tmp_path):
    "Case 13 of the run-folder issue: `synth poses=1` used to write no val / test_pose split without a word."
    r = run_py("-m", "avatar_nb", "synth", "--out", str(tmp_path / "ds"), "poses=1", "views=3", "size=32")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "no test_pose split" in r.stderr and "no val split" in r.stderr and "best.ckpt" in r.stderr, r.stderr
    splits = json.loads((tmp_path / "ds" / "splits.json").read_text())
    assert "test_pose" not in splits and "val" not in splits and len(splits["train"]) == 2
    r = run_py("-m", "avatar_nb", "synth", "--out", str(tmp_path / "ok"), "poses=3", "views=3", "size=32", "val_fraction=0.5")
    assert r.returncode == 0 and "note:" not in r.stderr, r.stderr
