"MediaPipe pose + masks + the Anny fit as a user runs them: real photos, and every kind of bad input."
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_py

pytest.importorskip("mediapipe", reason="the mediapipe extra is not installed (pip install -e '.[mediapipe]')")
MESSI = Path("/usr/share/doc/opencv-doc/examples/data/messi5.jpg")
need_messi = pytest.mark.skipif(not MESSI.is_file(), reason=f"{MESSI} absent (apt-get install opencv-doc)")


def messi():
    from avatar_nb.mp_pose import read_image
    return read_image(MESSI)


def astronaut():
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image is not installed (dev extra)")
    try: return skimage_data.astronaut()
    except Exception as e: pytest.skip(f"skimage.data.astronaut() unavailable: {e}")


@need_messi
def test_cli_writes_a_dataset_and_counts_skips(tmp_path):
    "Person found and fitted; a frame with nobody and a corrupt file are skipped, counted and named."
    from avatar_nb.data import load_dataset_index
    frames = tmp_path / "frames"; frames.mkdir()
    rgb = messi()
    Image.fromarray(rgb).save(frames / "a_messi.png")
    Image.fromarray(np.full_like(rgb, 140)).save(frames / "b_empty.png")
    (frames / "c_corrupt.jpg").write_bytes(b"\xff\xd8 truncated")
    out = tmp_path / "mine"
    r = run_py("-m", "avatar_nb", "preprocess", "--pose", "mediapipe", "--images", str(frames), "--out", str(out),
               "iterations=30")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "1 without a person, 1 unreadable" in r.stdout
    idx = load_dataset_index(out)
    assert idx.meta["source"] == "mediapipe+anny" and idx.meta["masks"] == "estimated"
    assert list(idx.frames) == ["a_messi"] and idx.body_model == "anny"
    rep = idx.meta["report"]
    assert rep["empty_frames"] == ["b_empty"] and "c_corrupt.jpg" in rep["unreadable"][0]
    with np.load(out / "fit.npz") as z:
        assert z["keypoints33"].shape == (1, 33, 2) and z["visibility33"][0, 11:29].mean() > 0.8
        # a few percent of the person's height: the body follows the keypoints
        assert z["residual_px"][0] < 0.05 * rgb.shape[0]
    with Image.open(out / "masks" / "cam00" / "a_messi.png") as m: mask = np.asarray(m)
    soft = ((mask > 0) & (mask < 255)).sum()
    assert soft > 0, "soft mask edges are kept"
    # the fitted body's vertices project onto the mask (IoU of the rasterised body is in the chapter)
    K = np.asarray(idx.cameras["cam00"].K)
    v = idx.vertices[0] * np.array([1, -1, -1])
    uv = v @ K.T; uv = uv[:, :2] / uv[:, 2:]
    inside = mask[uv[:, 1].astype(int).clip(0, mask.shape[0] - 1), uv[:, 0].astype(int).clip(0, mask.shape[1] - 1)] > 127
    assert inside.mean() > 0.7


def test_no_person_anywhere_writes_nothing(tmp_path):
    frames = tmp_path / "frames"; frames.mkdir()
    for i, v in enumerate((0, 128, 255)): Image.fromarray(np.full((200, 160, 3), v, np.uint8)).save(frames / f"{i}.png")
    noise = np.random.default_rng(0).integers(0, 255, (200, 160, 3), dtype=np.uint8)
    Image.fromarray(noise).save(frames / "noise.png")
    out = tmp_path / "mine"
    r = run_py("-m", "avatar_nb", "preprocess", "--pose", "mediapipe", "--images", str(frames), "--out", str(out))
    assert r.returncode != 0 and "no person found" in r.stderr and str(frames) in r.stderr
    assert not out.exists() and not list(tmp_path.glob(".mine*"))


def test_bad_video_and_fov_name_the_input(tmp_path):
    bad = tmp_path / "walk.mp4"; bad.write_bytes(b"\x00\x00\x00 not a video")
    r = run_py("-m", "avatar_nb", "preprocess", "--pose", "mediapipe", "--video", str(bad), "--out", str(tmp_path / "o"))
    assert r.returncode != 0 and "walk.mp4" in r.stderr and not (tmp_path / "o").exists()
    r = run_py("-m", "avatar_nb", "preprocess", "--pose", "mediapipe", "--video", str(tmp_path / "missing.mp4"),
               "--out", str(tmp_path / "o"))
    assert r.returncode != 0 and "missing.mp4" in r.stderr
    (tmp_path / "f").mkdir(); Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "f" / "a.png")
    r = run_py("-m", "avatar_nb", "preprocess", "--pose", "mediapipe", "--images", str(tmp_path / "f"),
               "--out", str(tmp_path / "o"), "fov_degrees=179")
    assert r.returncode != 0 and "179" in r.stderr and not (tmp_path / "o").exists()


def test_missing_pose_models_is_a_clear_error(tmp_path):
    from avatar_nb.mp_pose import PoseDetector
    with pytest.raises(FileNotFoundError, match="gone.task.*build_pose_bundle"):
        PoseDetector(bundle=tmp_path / "gone.task")


@need_messi
def test_several_people_keep_the_largest_and_cut_person_is_flagged():
    from avatar_nb.mp_pose import PoseDetector
    rgb = messi()
    H, W = rgb.shape[:2]
    crop = rgb[:, 60:470]  # the footballer, little background
    h, w = int(H * 0.85), int(crop.shape[1] * 0.85)
    small = np.asarray(Image.fromarray(crop).resize((w, h)))
    # a smaller copy above the full-size one (side by side, MediaPipe's detector reports only one of them)
    two = np.concatenate([np.pad(small, ((0, 0), (0, crop.shape[1] - w), (0, 0)), constant_values=128), crop], 0)
    with PoseDetector() as det:
        one = det.detect(rgb)
        pf = det.detect(np.ascontiguousarray(two))
        cut = det.detect(np.ascontiguousarray(rgb[: int(H * 0.6)]))
    assert pf is not None and pf.people >= 2
    assert pf.box[1] >= h - 5  # the full-size footballer (below) is kept, not the smaller copy
    assert abs(pf.mask_area - one.mask_area) < 0.2 * one.mask_area
    assert cut is not None and cut.cut and cut.visibility[27:29].max() == 0  # ankles outside the image count for nothing


def test_astronaut_unseen_legs_are_low_confidence(tmp_path):
    "An upper-body portrait: the person is found, the legs MediaPipe cannot see are marked low-confidence."
    from avatar_nb.mp_pose import PoseDetector
    rgb = astronaut()
    with PoseDetector() as det: pf = det.detect(rgb)
    assert pf is not None
    assert pf.visibility[[11, 12]].min() > 0.8  # shoulders seen
    assert pf.visibility[25:33].max() < 0.5  # knees, ankles, heels, feet: unseen


@need_messi
def test_cli_video(tmp_path):
    "A video file: frames read, tracked, fitted as one smooth sequence, written with their indices as names."
    import imageio.v3 as iio
    from avatar_nb.data import load_dataset_index
    rgb = messi()[:336, :544]  # even sides for the encoder
    frames = np.stack([np.roll(rgb, 2 * i, axis=1) for i in range(4)])
    video = tmp_path / "clip.mp4"
    iio.imwrite(video, frames, fps=25)
    out = tmp_path / "vid"
    r = run_py("-m", "avatar_nb", "preprocess", "--pose", "mediapipe", "--video", str(video), "--out", str(out),
               "iterations=10", "max_frames=3")
    assert r.returncode == 0, r.stderr[-3000:]
    idx = load_dataset_index(out)
    assert list(idx.frames) == ["000000", "000001", "000002"]
    assert idx.meta["preprocess"]["video"] == str(video) and len(idx.meta["residual_px"]) == 3
