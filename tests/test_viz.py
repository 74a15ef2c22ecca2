"Viewer and animation on real files: a trained checkpoint, PLY sequences, videos, AMASS-layout motions (the 3D scene's page and server are checked in nbs/19b_scene)."

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def person(tmp_path_factory):
    "A tiny synthetic person, a 3-step training run on it, and the person decoded by the trained checkpoint."
    from avatar_nb.data import load_dataset_index
    from avatar_nb.export import decode_person
    from avatar_nb.pairs import AvatarDataset, DataConfig, stack_views
    from avatar_nb.train import load_avatar, load_run_config, train
    run = tmp_path_factory.mktemp("run")
    cfg = load_run_config(overrides=[f"out={run}", f"dataset.root={run / 'data'}", f"data.cache_dir={run / 'cache'}",
                                     "dataset.synth.poses=3", "dataset.synth.views=3", "dataset.synth.size=64",
                                     "data.size=64", "trainer.max_steps=3", "trainer.batch_size=1", "trainer.val_every=0",
                                     "trainer.sample_every=0", "trainer.checkpoint_every=0", "trainer.log_every=1"])
    r = train(cfg, enable_progress_bar=False, enable_model_summary=False)
    model, saved = load_avatar(r["last"])
    index = load_dataset_index(saved.dataset.root)
    entry = index.splits["train"][0]
    views = stack_views([AvatarDataset(index, "train", DataConfig(size=64, augment=False)).view(entry)])
    return dict(model=model, decoded=decode_person(model, views), index=index, frame=entry[0], run=run)


@pytest.fixture(scope="module")
def walk(person, anny_body):
    from avatar_nb.export import walk_vertices
    return walk_vertices(anny_body, person["index"], person["frame"], n=4)


def _person_pixels(img):
    return (np.abs(img.astype(int) - 255).sum(-1) > 30).mean()


def test_viewer_on_a_checkpoint(person, walk, anny_body):
    "load_avatar -> decode once -> the viewer renders the person, and the view follows the controls."
    from avatar_nb.people import PART_NAMES, vertex_parts
    from avatar_nb.viz import AvatarViewer
    v = AvatarViewer(person["model"], person["decoded"], walk, labels=vertex_parts(anny_body), label_names=PART_NAMES,
                     size=(96, 128))
    front = v.render()
    assert front.shape == (128, 96, 3) and front.dtype == np.uint8
    assert 0.05 < _person_pixels(front) < 0.6
    assert np.abs(v.render(frame=2).astype(int) - front.astype(int)).mean() > 0.5
    assert _person_pixels(v.render(distance=2 * v.state.distance)) < 0.5 * _person_pixels(front)  # farther is smaller
    head = v.render(part="head", colour="part")
    assert 0 < _person_pixels(head) < 0.3 * _person_pixels(front)
    with pytest.raises(ValueError, match="part must be 'all' or one of"): v.render(part="tail")
    png = v.png(colour="scale")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_viewer_on_a_ply_sequence(person, walk, tmp_path):
    "Splats read back from a PLY sequence view like the model's; blending interpolates the Gaussians."
    from avatar_nb.export import export_sequence
    from avatar_nb.ply import load_ply
    from avatar_nb.viz import AvatarViewer
    files = export_sequence(person["model"], person["decoded"], walk, tmp_path / "seq")
    frames = [load_ply(f) for f in files]
    v = AvatarViewer(splats=frames, size=96)
    assert v.num_frames == 4
    mid = v.posed(0, 2, 0.5)
    torch.testing.assert_close(mid.means, (frames[0].means + frames[2].means) / 2, atol=1e-6, rtol=0)
    torch.testing.assert_close(mid.quats.norm(dim=-1), torch.ones(len(mid.quats)), atol=1e-5, rtol=0)
    assert _person_pixels(v.render()) > 0.05
    with pytest.raises(ValueError, match="part selection need labels"): v.render(colour="part")
    with pytest.raises(ValueError, match="frame must be in 0..3"): v.render(frame=4)


def test_videos_of_odd_size(tmp_path):
    "An MP4 of odd width and height is padded to even sides; a GIF keeps its size and frame time."
    import imageio.v3 as iio
    from avatar_nb.animate import write_video
    rng = np.random.default_rng(0)
    frames = np.repeat(np.repeat(rng.integers(0, 255, (5, 8, 10, 3), dtype=np.uint8), 8, 1), 8, 2)[:, :61, :75]
    mp4 = iio.imread(write_video(frames, tmp_path / "a.mp4", fps=10), index=None, plugin="FFMPEG")
    assert mp4.shape == (5, 62, 76, 3)
    assert np.abs(mp4[:, :61, :75].astype(int) - frames.astype(int)).mean() < 12
    gif = write_video(frames, tmp_path / "a.gif", fps=5)
    assert iio.imread(gif, index=None).shape[:3] == (5, 61, 75)
    assert iio.immeta(gif, index=0)["duration"] == 200
    assert not list(tmp_path.glob(".*part*"))  # no temporary file left
    with pytest.raises(ValueError, match="uint8 array"): write_video(frames.astype(np.float32), tmp_path / "b.gif")


def test_amass_layouts_agree(tmp_path):
    "poses [T, 165], separate keys and SMPL+H poses [T, 156] give the same SMPL-X parameters; betas [T, 16] are cut."
    from avatar_nb.animate import load_amass, motion_vertices
    from avatar_nb.body import SmplxBody, write_tiny_model_file
    rng = np.random.default_rng(0)
    T = 6
    poses = (rng.standard_normal((T, 165)) * 0.2).astype(np.float32)
    poses[:, 66:75] = 0  # jaw and eyes, which SMPL+H files lack
    trans, betas = rng.standard_normal((T, 3)), rng.standard_normal((T, 16))
    np.savez(tmp_path / "a.npz", poses=poses, trans=trans, betas=betas, mocap_frame_rate=np.array(30.0))
    np.savez(tmp_path / "b.npz", root_orient=poses[:, :3], pose_body=poses[:, 3:66], pose_hand=poses[:, 75:],
             pose_jaw=poses[:, 66:69], pose_eye=poses[:, 69:75], trans=trans, betas=betas, mocap_framerate=30.0)
    np.savez(tmp_path / "c.npz", poses=np.concatenate([poses[:, :66], poses[:, 75:]], 1), trans=trans, betas=betas,
             mocap_framerate=30.0)
    ms = [load_amass(tmp_path / f"{n}.npz") for n in "abc"]
    for m in ms[1:]:
        assert set(m.params) <= set(ms[0].params)
        for k, v in m.params.items(): torch.testing.assert_close(v, ms[0].params[k])
    assert ms[0].params["betas"].shape == (T, 10)
    torch.testing.assert_close(ms[0].params["betas"], torch.as_tensor(betas[:, :10], dtype=torch.float32))
    body = SmplxBody("smplx", write_tiny_model_file(tmp_path / "SMPLX_NEUTRAL.npz", "smplx"))
    va, vc = motion_vertices(body, ms[0]), motion_vertices(body, ms[2], batch=4)
    torch.testing.assert_close(va, vc)
    assert load_amass(tmp_path / "a.npz", fps=10).num_frames == 2
    with pytest.raises(FileNotFoundError, match="motion file not found"): load_amass(tmp_path / "none.npz")
