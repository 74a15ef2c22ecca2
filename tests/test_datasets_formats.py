"""PeopleSnapshot and ZJU-MoCap loaders on synthetic folders shaped like each layout: pixel convention, units,
neuralbody's Rh/Th, undistortion, splits, refined poses, errors; AvatarDataset on the result."""
import math
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from avatar_nb.body import axis_angle_to_matrix, load_body_model, write_tiny_model_file
from avatar_nb.config import BodyConfig
from avatar_nb.data import DatasetError, mesh_raster
from avatar_nb.datasets import (body_vertices, distort_pixels, load_peoplesnapshot, load_zju_mocap, opencv_intrinsics,
                                remap, undistort_map)
from avatar_nb.localise import look_at, project, transform_points
from avatar_nb.pairs import AvatarDataset, DataConfig, collate

PS_SPLITS = {"train": (0, 7, 2), "test_pose": (8, 11, 1)}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return write_tiny_model_file(tmp_path_factory.mktemp("smpl") / "SMPL_NEUTRAL.pkl", "smpl", n=16)


@pytest.fixture(scope="module")
def body(model):
    return load_body_model(BodyConfig(model="smpl", model_path=str(model)))


def iou(a, b):
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return (a & b).sum() / (a | b).sum()


def write_peoplesnapshot(root, body, n=12, W=64, H=96):
    "n frames of the tiny body turning in front of a camera whose K is written the OpenCV way."
    g = torch.Generator().manual_seed(1)
    thetas = torch.zeros(n, 72)
    thetas[:, 3:] = 0.1 * torch.randn(n, 69, generator=g)
    thetas[:, 1] = torch.linspace(0, math.pi, n)
    betas, transl = 0.5 * torch.randn(10, generator=g), torch.tensor([0.0, -0.85, 0.0]).repeat(n, 1)
    Kcv = np.array([[70.0, 0, (W - 1) / 2], [0, 70, (H - 1) / 2], [0, 0, 1]])
    E = np.diag([1.0, -1, -1, 1]); E[2, 3] = 3.0
    for sub in ("images", "masks", "poses"): (root / sub).mkdir(parents=True, exist_ok=True)
    np.savez(root / "cameras.npz", intrinsic=Kcv, extrinsic=E, height=H, width=W)
    np.savez(root / "poses.npz", betas=betas.numpy(), thetas=thetas.numpy(), transl=transl.numpy())
    with torch.no_grad():
        verts = body(global_orient=thetas[:, :3], body_pose=thetas[:, 3:], betas=betas.expand(n, 10), transl=transl).vertices
    # the camera's pixel (i, j) looks through (i, j) in OpenCV's convention: rasterise at those points
    K_centres = torch.tensor(opencv_intrinsics(Kcv)).float()
    for i in range(n):
        m, d = mesh_raster(verts[i], body.faces, K_centres, torch.tensor(E).float(), W, H)
        shade = torch.where(m, (4.0 - d).clamp(0, 1), torch.full((), 0.2))
        Image.fromarray((torch.stack([shade, shade, 1 - shade], -1) * 255).byte().numpy()).save(root / "images" / f"image_{i:04d}.png")
        np.save(root / "masks" / f"mask_{i:04d}.npy", m.numpy().astype(np.uint8))
    return root, verts.numpy()


@pytest.fixture(scope="module")
def ps(tmp_path_factory, body):
    return write_peoplesnapshot(tmp_path_factory.mktemp("ps") / "female-3-casual", body)


def undistorted_pos(uv_d, K, D, iters=30):
    u = uv_d.copy()
    for _ in range(iters): u = u + (uv_d - distort_pixels(u, K, D))
    return u


def write_zju(root, body, n=6, W=128, H=128, dist_cam=1, cams=4, name=lambda c, t: f"Camera_B{c + 1}/{t:06d}.jpg",
              mask_dir="mask", param_dir="params", param_number=lambda t: t):
    "A CoreView folder: cameras around the tiny body, T in millimetres, lens distortion on one camera, Rh/Th bodies."
    g = torch.Generator().manual_seed(2)
    Rh, Th = 0.3 * torch.randn(n, 3, generator=g), 0.2 * torch.randn(n, 3, generator=g)
    poses = torch.zeros(n, 72); poses[:, 3:] = 0.1 * torch.randn(n, 69, generator=g)
    poses[:, :3] = 0.5  # neuralbody ignores the SMPL global orientation (Rh carries it)
    shapes = 0.5 * torch.randn(1, 10, generator=g)
    with torch.no_grad(): smpl_v = body(body_pose=poses[:, 3:], betas=shapes.expand(n, 10)).vertices
    world = smpl_v @ axis_angle_to_matrix(Rh).transpose(1, 2) + Th[:, None]
    (root / param_dir).mkdir(parents=True)
    for t in range(n):
        np.save(root / param_dir / f"{param_number(t)}.npy", {"poses": poses[t:t + 1].numpy(), "Rh": Rh[t:t + 1].numpy(),
                                                                "Th": Th[t:t + 1].numpy(), "shapes": shapes.numpy()})
    annots = {"K": [], "R": [], "T": [], "D": []}
    ims, pinhole_masks = [{"ims": []} for _ in range(n)], {}
    ys, xs = np.mgrid[0:H, 0:W] + 0.5
    for c in range(cams):
        a = math.radians(90 * c + 10)
        E = look_at(torch.tensor([3.5 * math.sin(a), 0.5, 3.5 * math.cos(a)]), torch.tensor([0.0, 0.5, 0.0]))
        Kcv = np.array([[120.0, 0, (W - 1) / 2], [0, 120, (H - 1) / 2], [0, 0, 1]])
        D = np.array([[-0.25], [0.05], [0.001], [0.0], [0.0]]) if c == dist_cam else np.zeros((5, 1))
        annots["K"].append(Kcv); annots["R"].append(E[:3, :3].numpy()); annots["T"].append(E[:3, 3:].numpy() * 1000)
        annots["D"].append(D)
        K = opencv_intrinsics(Kcv)
        src = undistorted_pos(np.stack([xs, ys], -1), K, D.ravel()) if c == dist_cam else np.stack([xs, ys], -1)
        src = np.clip(np.floor(src).astype(int), 0, [W - 1, H - 1])
        for t in range(n):
            m, d = mesh_raster(world[t], body.faces, torch.tensor(K).float(), E, W, H)
            pinhole_masks[t, c] = m.numpy()
            m, d = m.numpy()[src[..., 1], src[..., 0]], d.numpy()[src[..., 1], src[..., 0]]
            rel = name(c, t)
            for p in (root / rel, (root / mask_dir / rel).with_suffix(".png")): p.parent.mkdir(parents=True, exist_ok=True)
            shade = np.where(m, np.clip(5.0 - d, 0, 1), 0.1)
            Image.fromarray((np.stack([shade, 1 - shade, shade], -1) * 255).astype(np.uint8)).save(root / rel)
            Image.fromarray(m.astype(np.uint8)).save((root / mask_dir / rel).with_suffix(".png"))
            ims[t]["ims"].append(rel)
    np.save(root / "annots.npy", {"cams": annots, "ims": ims})
    return root, world.numpy(), pinhole_masks


@pytest.fixture(scope="module")
def zju(tmp_path_factory, body):
    return write_zju(tmp_path_factory.mktemp("zju") / "CoreView_377", body)


ZJU_FRAMES = dict(train_frames=(0, 2, 2), test_frames=(1, 2, 3))  # train 0, 2; test 1, 4


# ---------------------------------------------------------------- PeopleSnapshot

def test_peoplesnapshot_intrinsics_move_half_a_pixel(ps, model, body):
    root, verts = ps
    idx = load_peoplesnapshot(root, model, splits=PS_SPLITS)
    cam = idx.cameras["camera"]
    np.testing.assert_allclose(cam.K[:2, 2], [32.0, 48.0])  # OpenCV's (W-1)/2 is the centre W/2 here
    np.testing.assert_allclose(idx.vertices, verts, atol=1e-5)
    E, K = torch.tensor(cam.viewmat).float(), torch.tensor(cam.K).float()
    Kcv = torch.tensor(np.load(root / "cameras.npz")["intrinsic"]).float()
    for t in range(12):
        m = np.load(root / "masks" / f"mask_{t:04d}.npy")
        v = torch.from_numpy(idx.vertices[t])
        good = iou(mesh_raster(v, body.faces, K, E, 64, 96)[0], m)
        unconverted = iou(mesh_raster(v, body.faces, Kcv, E, 64, 96)[0], m)
        assert good > 0.99 and unconverted < good - 0.03, (t, good, unconverted)


def test_peoplesnapshot_splits(ps, tmp_path):
    root, _ = ps
    idx = load_peoplesnapshot(root, splits=PS_SPLITS)
    assert [f for f, _ in idx.splits["train"]] == ["0000", "0002", "0004", "0006"]
    assert [f for f, _ in idx.splits["test_pose"]] == ["0008", "0009", "0010", "0011"]
    assert idx.vertices is None and idx.params["body_pose"].shape == (12, 69) and idx.params["betas"].shape == (12, 10)
    # the usual split of a full-length female-3 sequence (cameras and poses only, no pixels checked)
    full = tmp_path / "female-3-casual"; full.mkdir()
    shutil.copy(root / "cameras.npz", full)
    np.savez(full / "poses.npz", betas=np.zeros(10), thetas=np.zeros((648, 72)), transl=np.zeros((648, 3)))
    u = load_peoplesnapshot(full, check=False)
    assert [int(f) for f, _ in u.splits["train"]] == list(range(0, 446, 4))
    assert [int(f) for f, _ in u.splits["test_pose"]] == list(range(446, 648))
    (full.parent / "male-4-casual").mkdir(); shutil.copy(root / "cameras.npz", full.parent / "male-4-casual")
    np.savez(full.parent / "male-4-casual" / "poses.npz", betas=np.zeros(10), thetas=np.zeros((873, 72)), transl=np.zeros((873, 3)))
    m4 = load_peoplesnapshot(full.parent / "male-4-casual", check=False)
    assert [int(f) for f, _ in m4.splits["train"]] == list(range(0, 660, 6))
    assert int(m4.splits["test_pose"][0][0]) == 660 and int(m4.splits["test_pose"][-1][0]) == 872
    with pytest.raises(DatasetError, match="split 'train' asks for frames 0..445 step 4, but poses.npz has frames 0..11"):
        load_peoplesnapshot(root)
    other = tmp_path / "someone"; shutil.copytree(root, other)
    with pytest.raises(DatasetError, match="no usual split known for 'someone'"):
        load_peoplesnapshot(other)


def test_peoplesnapshot_refined_poses(ps, tmp_path):
    root = tmp_path / "female-3-casual"; shutil.copytree(ps[0], root)
    d = dict(np.load(root / "poses.npz"))
    go, bp = np.full((4, 3), 0.25, np.float32), np.zeros((4, 69), np.float32)
    np.savez(root / "poses" / "anim_nerf_test.npz", betas=d["betas"][None], global_orient=go, body_pose=bp,
             transl=d["transl"][8:12] + 1)
    idx = load_peoplesnapshot(root, splits=PS_SPLITS)
    assert idx.meta["refined"] == ["poses/anim_nerf_test.npz"]
    np.testing.assert_allclose(idx.params["global_orient"][8:], go)
    np.testing.assert_allclose(idx.params["transl"][8:], d["transl"][8:12] + 1)
    np.testing.assert_allclose(idx.params["body_pose"][:8], d["thetas"][:8, 3:])  # other frames untouched
    assert len(load_peoplesnapshot(root, splits=PS_SPLITS, refined=False).meta["refined"]) == 0
    np.savez(root / "poses" / "anim_nerf_test.npz", betas=d["betas"], thetas=d["thetas"][:3], transl=d["transl"][:3])
    with pytest.raises(DatasetError, match="anim_nerf_test.npz: thetas has shape \\[3, 72\\], expected \\[4, 72\\]"):
        load_peoplesnapshot(root, splits=PS_SPLITS)


def test_peoplesnapshot_bad_files(ps, tmp_path):
    root = tmp_path / "female-3-casual"; shutil.copytree(ps[0], root)
    np.save(root / "masks" / "mask_0002.npy", np.zeros((10, 10), np.uint8))
    with pytest.raises(DatasetError, match="masks/mask_0002.npy is 10x10 but camera 'camera' is 64x96"):
        load_peoplesnapshot(root, splits=PS_SPLITS)
    idx = load_peoplesnapshot(root, splits=PS_SPLITS, on_error="skip")
    assert ("0002", "camera") not in idx.splits["train"] and "mask_0002.npy" in idx.skipped[0]
    (root / "cameras.npz").unlink()
    with pytest.raises(FileNotFoundError, match="cameras.npz not found"):
        load_peoplesnapshot(root, splits=PS_SPLITS)


def test_avatar_dataset_on_peoplesnapshot(ps, model):
    idx = load_peoplesnapshot(ps[0], model, splits=PS_SPLITS)
    ds = AvatarDataset(idx, "test_pose", DataConfig(size=64))
    b = collate([ds[i] for i in range(len(ds))])
    assert b.target.image.shape == (4, 3, 64, 64) and b.source.image.shape == (4, 1, 3, 64, 64)
    assert all(f[0] in {"0000", "0002", "0004", "0006"} for f in b.source.frame)  # sources from train
    for i in range(4):
        uv = project(transform_points(b.target.viewmat[i], b.target.vertices[i]), b.target.K[i]).floor().long().clamp(0, 63)
        assert (b.target.mask[i, 0, uv[:, 1], uv[:, 0]] > 0).float().mean() > 0.9


# ---------------------------------------------------------------- ZJU-MoCap

def test_zju_units_conventions_and_splits(zju, model):
    root, world, _ = zju
    idx = load_zju_mocap(root, model, **ZJU_FRAMES)
    assert idx.frames.tolist() == ["000000", "000001", "000002", "000004"]
    np.testing.assert_allclose(idx.vertices, world[[0, 1, 2, 4]], atol=1e-4)  # R(Rh) SMPL(no global orient) + Th
    assert idx.splits["train"] == [("000000", "Camera_B1"), ("000002", "Camera_B1")]
    assert sorted({c for _, c in idx.splits["test_view"]}) == ["Camera_B2", "Camera_B3", "Camera_B4"]
    cam = idx.cameras["Camera_B1"]
    centre = -cam.viewmat[:3, :3].T @ cam.viewmat[:3, 3]
    assert abs(np.linalg.norm(centre - [0, 0.5, 0]) - 3.5) < 1e-4  # metres, from millimetres
    np.testing.assert_allclose(cam.K[:2, 2], [64.0, 64.0])
    assert cam.dist is None and idx.cameras["Camera_B2"].dist is not None
    assert idx.mask_threshold == 0.0 and idx.meta["masks"] == "mask"
    custom = load_zju_mocap(root, train_cameras=(2,), test_cameras=(0,), train_frames=(1, 3, 1), test_frames=(5, 1, 1))
    assert custom.splits["train"] == [(f"{t:06d}", "Camera_B3") for t in (1, 2, 3)]
    assert custom.splits["test_view"] == [("000005", "Camera_B1")]


def test_zju_without_model_file_keeps_rh_th_as_body_to_world(zju, body):
    root, world, _ = zju
    idx = load_zju_mocap(root, **ZJU_FRAMES)
    assert idx.vertices is None and idx.body_to_world.shape == (4, 4, 4)
    assert np.abs(idx.params["global_orient"]).max() == 0 and np.abs(idx.params["transl"]).max() == 0
    np.testing.assert_allclose(body_vertices(idx, body), world[[0, 1, 2, 4]], atol=1e-4)
    ds = AvatarDataset(idx, "train", DataConfig(size=32), body_model=body)
    for i in range(len(ds)):
        np.testing.assert_allclose(ds[i].target.vertices.numpy(), world[int(ds[i].target.frame)], atol=1e-4)


def test_zju_undistortion_restores_the_pinhole_picture(zju, model):
    root, _, pinhole = zju
    idx = load_zju_mocap(root, model, **ZJU_FRAMES)
    cam = idx.cameras["Camera_B2"]
    for t in (1, 4):
        raw = np.asarray(Image.open(root / f"mask/Camera_B2/{t:06d}.png")) > 0
        und = remap(raw.astype(np.uint8) * 255, undistort_map(cam)) > 127
        err_raw, err_und = 1 - iou(raw, pinhole[t, 1]), 1 - iou(und, pinhole[t, 1])
        assert err_und < 0.01 and err_und < err_raw / 5, (t, err_raw, err_und)
    ds = AvatarDataset(idx, "test_view", DataConfig(size=96))
    k = ds.targets.index(("000001", "Camera_B2"))
    v = ds[k].target
    uv = project(transform_points(v.viewmat, v.vertices), v.K).floor().long().clamp(0, 95)
    assert (v.mask[0, uv[:, 1], uv[:, 0]] > 0).float().mean() > 0.9


def test_zju_layout_variants(tmp_path, body):
    "CoreView_313-style names numbered from the file name, smpl_params/, mask_cihp/ picked when present."
    name = lambda c, t: f"Camera ({c + 1})/CoreView_313_Camera_({c + 1})_{t + 1:04d}_2019-08-23_16-08-50.592.jpg"
    root, world, _ = write_zju(tmp_path / "CoreView_313", body, n=3, W=48, H=48, cams=2, dist_cam=-1, name=name,
                               mask_dir="mask_cihp", param_dir="smpl_params", param_number=lambda t: t + 1)
    idx = load_zju_mocap(root, train_frames=(0, 3, 1), test_frames=(0, 1, 1))
    assert sorted(idx.cameras) == ["Camera (1)", "Camera (2)"] and idx.meta["masks"] == "mask_cihp"
    np.testing.assert_allclose(body_vertices(idx, body), world, atol=1e-4)  # params 1.npy.. for frames 0..
    assert idx.files[("000000", "Camera (1)")][1].parts[-3] == "mask_cihp"


def test_zju_errors(zju, tmp_path):
    root = tmp_path / "CoreView_377"; shutil.copytree(zju[0], root)
    with pytest.raises(DatasetError, match="split 'train' asks for 100 frames from 0 at interval 5, but there are 6"):
        load_zju_mocap(root)
    with pytest.raises(DatasetError, match="out of range 0..3"):
        load_zju_mocap(root, train_cameras=(4,), **ZJU_FRAMES)
    (root / "params" / "2.npy").rename(tmp_path / "2.npy")
    with pytest.raises(FileNotFoundError, match="params/2.npy not found"):
        load_zju_mocap(root, **ZJU_FRAMES)
    (tmp_path / "2.npy").rename(root / "params" / "2.npy")
    Image.new("L", (50, 50)).save(root / "mask/Camera_B3/000004.png")
    with pytest.raises(DatasetError, match="mask/Camera_B3/000004.png is 50x50 but camera 'Camera_B3' is 128x128"):
        load_zju_mocap(root, **ZJU_FRAMES)
    (root / "annots.npy").unlink()
    with pytest.raises(FileNotFoundError, match="annots.npy not found"):
        load_zju_mocap(root)


def test_avatar_dataset_on_zju_through_a_dataloader(zju, model):
    idx = load_zju_mocap(zju[0], model, **ZJU_FRAMES)
    ds = AvatarDataset(idx, "test_view", DataConfig(size=64, num_sources=2))
    dl = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate)
    batches = list(dl)
    assert sum(len(b.target.frame) for b in batches) == 6
    b = batches[0]
    assert b.source.image.shape == (3, 2, 3, 64, 64) and b.target.vertices.shape[1:] == idx.vertices.shape[1:]
    assert all(c == "Camera_B1" for cs in b.source.camera for c in cs)  # sources: the training camera
