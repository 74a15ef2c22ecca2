"""Dataset format reader (fault injection) and training pairs: geometry after crops and jitter, determinism across
DataLoader workers, the pair rule, skips, the decoded cache."""
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from avatar_nb.body import load_body_model, write_tiny_model_file
from avatar_nb.config import BodyConfig
from avatar_nb.data import DatasetError, load_dataset_index, mesh_raster, write_tiny_dataset
from avatar_nb.localise import project, transform_points
from avatar_nb.pairs import AvatarDataset, DataConfig, View, collate


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    "4 frames (train: 0-2, test_pose: 3) x 3 cameras of the tiny SMPL-layout body, 96 x 128 images."
    d = tmp_path_factory.mktemp("tiny")
    model = write_tiny_model_file(d / "SMPL_NEUTRAL.pkl", "smpl", n=16)
    return write_tiny_dataset(d / "data", model, n_frames=4), model


@pytest.fixture(scope="module")
def smpl(tiny):
    return load_body_model(BodyConfig(model="smpl", model_path=str(tiny[1])))


@pytest.fixture()
def copy(tiny, tmp_path):
    "A fresh copy of the tiny dataset to break."
    def make():
        r = tmp_path / "d"
        shutil.copytree(tiny[0], r)
        return r
    return make


def edit_json(root, name, fn):
    (root / name).write_text(json.dumps(fn(json.loads((root / name).read_text()))))


def edit_npz(root, fn):
    z = dict(np.load(root / "bodies.npz"))
    fn(z)
    np.savez(root / "bodies.npz", **z)


def on_mask(v: View) -> float:
    "Fraction of the view's projected vertices that fall on mask pixels."
    uv = project(transform_points(v.viewmat, v.vertices), v.K)
    ij = uv.floor().long()
    S = v.mask.shape[-1]
    ok = (ij >= 0).all(-1) & (ij < S).all(-1)
    hit = torch.zeros(len(uv), dtype=torch.bool)
    hit[ok] = v.mask[0, ij[ok, 1], ij[ok, 0]] > 0
    return hit.float().mean().item()


def iou(a, b):
    a, b = a.bool(), b.bool()
    return ((a & b).sum() / (a | b).sum()).item()


def test_reader_round_trip(tiny, smpl):
    idx = load_dataset_index(tiny[0])
    assert idx.frames.tolist() == ["000000", "000001", "000002", "000003"]
    assert idx.identity.tolist() == [0, 0, 0, 0]
    assert idx.body_model == "smpl" and idx.meta["masks"] == "exact"
    assert sorted(idx.cameras) == ["back", "front", "left"]
    assert idx.cameras["front"].K[0, 2] == 48.0 and idx.cameras["front"].width == 96
    assert len(idx.splits["train"]) == 9 and len(idx.splits["test_pose"]) == 3
    assert all(i.is_file() and m.is_file() for i, m in idx.files.values())
    # stored vertices are the body model's output for the stored parameters
    v = smpl(**{k: torch.from_numpy(a) for k, a in idx.params.items()}).vertices.detach().numpy()
    np.testing.assert_allclose(idx.vertices, v, atol=1e-5)
    assert "4 frames" in repr(idx) and "'train': 9" in repr(idx)


def _rm(p): return lambda r: (r / p).unlink()


FAULTS = {
    "no meta": (_rm("meta.json"), ["meta.json not found"]),
    "meta not json": (lambda r: (r / "meta.json").write_text("{oops"), ["meta.json: not valid JSON"]),
    "version": (lambda r: edit_json(r, "meta.json", lambda m: {**m, "version": 7}), ["meta.json", "version 7 is not readable"]),
    "format": (lambda r: edit_json(r, "meta.json", lambda m: {**m, "format": "x"}), ["meta.json", "format must be 'avatar_nb-dataset'"]),
    "body model": (lambda r: edit_json(r, "meta.json", lambda m: {**m, "body_model": "mano"}), ["body_model must be one of"]),
    "missing camera": (lambda r: edit_json(r, "cameras.json", lambda c: {k: v for k, v in c.items() if k != "back"}),
                       ["splits.json", "camera 'back' is not in cameras.json"]),
    "bad K": (lambda r: edit_json(r, "cameras.json", lambda c: {**c, "left": {**c["left"], "K": [[1, 0], [0, 1]]}}),
              ["cameras.json", "camera 'left' K has shape [2, 2], expected [3, 3]"]),
    "no bodies": (_rm("bodies.npz"), ["bodies.npz not found"]),
    "vertices T": (lambda r: edit_npz(r, lambda z: z.update(vertices=z["vertices"][:3])),
                   ["bodies.npz", "'vertices' has shape [3, ", "leading dim T = 4"]),
    "transl T": (lambda r: edit_npz(r, lambda z: z.update(transl=z["transl"][:2])), ["'transl' has shape [2, 3]"]),
    "unknown param": (lambda r: edit_npz(r, lambda z: z.update(poses=np.zeros((4, 72), np.float32))),
                      ["'poses' is not a smpl parameter"]),
    "param shape": (lambda r: edit_npz(r, lambda z: z.update(body_pose=np.zeros((4, 63), np.float32))),
                    ["'body_pose' has shape [4, 63], expected [T, 69]"]),
    "frame ids": (lambda r: edit_npz(r, lambda z: z.update(frame=np.arange(4))), ["'frame' must be a [T] string array"]),
    "unknown frame": (lambda r: edit_json(r, "splits.json", lambda s: {**s, "val": [["000099", "front"]]}),
                      ["split 'val'", "frame '000099' is not in bodies.npz"]),
    "missing image": (_rm("images/left/000001.png"), ["missing image", "images/left/000001.png"]),
    "missing mask": (_rm("masks/front/000003.png"), ["missing mask", "masks/front/000003.png"]),
    "corrupt image": (lambda r: (r / "images/back/000002.png").write_bytes(b"not a png"),
                      ["cannot read image", "images/back/000002.png"]),
    "mask size": (lambda r: Image.new("L", (40, 30)).save(r / "masks/front/000000.png"),
                  ["masks/front/000000.png is 40x30 but camera 'front' is 96x128"]),
    "image size": (lambda r: Image.new("RGB", (128, 96)).save(r / "images/left/000002.png"),
                   ["images/left/000002.png is 128x96", "is 96x128"]),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_broken_datasets_are_refused_with_the_culprit_named(copy, fault):
    edit, expected = FAULTS[fault]
    r = copy()
    edit(r)
    with pytest.raises((DatasetError, FileNotFoundError)) as e:
        load_dataset_index(r)
    for s in expected: assert s in str(e.value), (s, str(e.value))


def test_skip_mode_drops_bad_entries_and_reports_them(copy):
    r = copy()
    (r / "images/left/000001.png").unlink()
    Image.new("L", (40, 30)).save(r / "masks/front/000003.png")
    idx = load_dataset_index(r, on_error="skip")
    assert ("000001", "left") not in idx.splits["train"] and len(idx.splits["train"]) == 8
    assert ("000003", "front") not in idx.splits["test_pose"] and len(idx.splits["test_pose"]) == 2
    assert len(idx.skipped) == 2
    assert any("000001/left" in s and "missing image" in s for s in idx.skipped)
    assert any("000003/front" in s and "is 40x30" in s for s in idx.skipped)
    ds = AvatarDataset(idx, "train", DataConfig(size=32))
    assert len(ds) == 8 and ds.skipped == idx.skipped


def test_unknown_and_empty_splits(copy):
    r = copy()
    edit_json(r, "splits.json", lambda s: {**s, "val": []})
    idx = load_dataset_index(r)
    with pytest.raises(DatasetError, match=r"unknown split 'test_view'.*available: \['test_pose', 'train', 'val'\]"):
        AvatarDataset(idx, "test_view")
    with pytest.raises(DatasetError, match="split 'val' of .* is empty"):
        AvatarDataset(idx, "val")
    for c in ("front", "left", "back"): (r / f"images/{c}/000003.png").unlink()
    with pytest.raises(DatasetError, match="split 'test_pose' .* is empty after skipping 3 bad entries"):
        AvatarDataset(load_dataset_index(r, on_error="skip"), "test_pose")


def test_geometry_survives_crop_resize_and_jitter(tiny, smpl):
    "Vertices projected with each item's K and viewmat land on its mask; the mesh re-rasterised with them matches it."
    idx = load_dataset_index(tiny[0])
    cfg = DataConfig(size=128, num_sources=2, scale_jitter=0.3, shift_jitter=0.15, seed=5)
    ds = AvatarDataset(idx, "train", cfg)
    Ks, fracs = set(), []
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            p = ds[i]
            views = [p.target] + [View(p.source.image[s], p.source.mask[s], p.source.K[s], p.source.viewmat[s],
                                       p.source.vertices[s], p.source.frame[s], p.source.camera[s]) for s in range(2)]
            for v in views:
                assert set(v.mask.unique().tolist()) == {0.0, 1.0}
                frac = on_mask(v)
                fracs.append(frac)
                if v.camera == "front": assert frac > 0.9, (epoch, i, v.frame, frac)
                sil, _ = mesh_raster(v.vertices, smpl.faces, v.K, v.viewmat, 128, 128)
                assert iou(sil, v.mask[0]) > 0.9, (epoch, i, v.frame, v.camera)
                Ks.add(tuple(v.K.flatten().tolist()))
    assert np.mean(fracs) > 0.9
    assert len(Ks) > 50  # the jitter really moved the crops
    # the check can fail: the full image's K (no crop) misplaces the body in the crop
    v = ds[0].target
    K_full = torch.tensor(idx.cameras[v.camera].K, dtype=torch.float32)
    assert iou(mesh_raster(v.vertices, smpl.faces, K_full, v.viewmat, 128, 128)[0], v.mask[0]) < 0.5


def test_items_are_deterministic_across_workers_and_epochs(tiny):
    idx = load_dataset_index(tiny[0])
    ds = AvatarDataset(idx, "train", DataConfig(size=48, num_sources=2, seed=3))
    ref = [ds[i] for i in range(len(ds))]
    dl = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate, persistent_workers=True)
    batches = list(dl)
    got = torch.cat([b.target.image for b in batches])
    assert torch.equal(got, torch.stack([r.target.image for r in ref]))
    assert [f for b in batches for f in b.source.frame] == [r.source.frame for r in ref]
    ds.set_epoch(1)  # persistent workers see the new epoch
    e1 = torch.cat([b.target.K for b in dl])
    assert torch.equal(e1, torch.stack([ds[i].target.K for i in range(len(ds))]))
    assert not torch.equal(e1, torch.stack([r.target.K for r in ref]))


def test_pair_rule(copy):
    r = copy()
    edit_npz(r, lambda z: z.update(identity=np.array([0, 1, 0, 2])))
    edit_json(r, "splits.json", lambda s: {"train": s["train"], "test_pose": s["test_pose"][:0],
                                           "test_identity": s["test_pose"]})
    idx = load_dataset_index(r)
    ident = dict(zip(idx.frames.tolist(), idx.identity.tolist()))
    train = AvatarDataset(idx, "train", DataConfig(size=32, num_sources=3))
    for i in range(len(train)):
        p = train[i]
        srcs = list(zip(p.source.frame, p.source.camera))
        assert all(ident[f] == ident[p.target.frame] == int(p.identity) for f in p.source.frame)
        assert (p.target.frame, p.target.camera) not in srcs
        assert all(s in idx.splits["train"] for s in srcs)
    test = AvatarDataset(idx, "test_identity", DataConfig(size=32, num_sources=1))
    assert not test.augment
    for i in range(len(test)):  # identity 2 has no train image: sources come from its own split, never the target
        p = test[i]
        assert p.source.frame == ["000003"] and p.source.camera[0] != p.target.camera


def test_colour_jitter_is_shared_by_source_and_target(tiny):
    idx = load_dataset_index(tiny[0])
    cfg = DataConfig(size=64, scale_jitter=0, shift_jitter=0, brightness=0.5, contrast=0, saturation=0, seed=11)
    ds = AvatarDataset(idx, "train", cfg)
    ratios = []
    for i in range(4):
        p = ds[i]
        for aug, entry in ((p.target.image, (p.target.frame, p.target.camera)),
                           (p.source.image[0], (p.source.frame[0], p.source.camera[0]))):
            plain = ds.view(entry).image
            ok = (plain > 0.05) & (aug < 0.99)
            ratios.append((aug[ok] / plain[ok]).median().item())
        assert abs(ratios[-1] - ratios[-2]) < 1e-3, ratios  # one factor for the pair
    assert max(ratios) - min(ratios) > 0.05  # and another for other items


def test_vertices_from_the_body_model(copy, smpl):
    r = copy()
    stored = load_dataset_index(r).vertices
    edit_npz(r, lambda z: z.pop("vertices"))
    idx = load_dataset_index(r)
    assert idx.vertices is None
    with pytest.raises(DatasetError, match="pass body_model="):
        AvatarDataset(idx, "train")
    ds = AvatarDataset(idx, "train", DataConfig(size=32), body_model=smpl)
    np.testing.assert_allclose(ds.vertices, stored, atol=1e-5)
    np.testing.assert_allclose(ds[0].target.vertices.numpy(), stored[0], atol=1e-5)


def test_bad_file_met_while_reading_raises_or_is_skipped_in_workers(copy):
    r = copy()
    idx = load_dataset_index(r)  # the start-up check finds damaged files (test_runs); this one goes bad after it
    p = r / "images/left/000000.png"
    p.write_bytes(p.read_bytes()[:150])  # header intact, pixel data cut off
    assert ("000000", "left") in idx.splits["train"]
    k = idx.splits["train"].index(("000000", "left"))
    with pytest.raises(Exception, match="images/left/000000.png"):
        AvatarDataset(idx, "train", DataConfig(size=32, augment=False))[k]
    one = AvatarDataset(idx, "train", DataConfig(size=32, augment=False, on_error="skip"))
    p = one[k]
    assert (p.target.frame, p.target.camera) == idx.splits["train"][k + 1]  # the split's next image in its place
    assert len(p.skipped) == 1 and "images/left/000000.png" in p.skipped[0] and one.skipped == p.skipped
    dl = torch.utils.data.DataLoader(AvatarDataset(idx, "train", DataConfig(size=32)), batch_size=3, num_workers=2,
                                     collate_fn=collate)
    with pytest.raises(Exception, match="images/left/000000.png"):
        list(dl)
    ds = AvatarDataset(idx, "train", DataConfig(size=32, on_error="skip"))
    dl = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate)
    batches = list(dl)
    skipped = [s for b in batches for s in b.skipped]
    assert skipped and all("images/left/000000.png" in s for s in skipped)
    assert sum(len(b.target.frame) for b in batches) == len(ds)  # every item is served, none empty
    for b in batches:
        assert (b.target.mask.flatten(1).sum(1) > 0).all() and (b.target.image.flatten(1).amax(1) > 0).all()
        assert ("000000", "left") not in list(zip(b.target.frame, b.target.camera))


def test_decoded_cache_gives_the_same_items_and_follows_file_changes(copy, tmp_path):
    r = copy()
    idx = load_dataset_index(r)
    plain = AvatarDataset(idx, "train", DataConfig(size=40, seed=2))
    cached = AvatarDataset(idx, "train", DataConfig(size=40, seed=2, cache_dir=str(tmp_path / "cache")))
    for i in range(len(plain)):
        a, b = plain[i], cached[i]
        assert torch.equal(a.target.image, b.target.image) and torch.equal(a.source.mask, b.source.mask)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 9
    b2 = cached[0]  # from the cache now
    assert torch.equal(b2.target.image, plain[0].target.image)
    entry = (b2.target.frame, b2.target.camera)
    img = np.asarray(Image.open(idx.files[entry][0])).copy()
    Image.fromarray(255 - img).save(idx.files[entry][0])  # the file changes: the cache must not serve the old pixels
    assert not torch.equal(cached[0].target.image, b2.target.image)
    assert torch.equal(cached[0].target.image, plain[0].target.image)
