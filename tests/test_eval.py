"Evaluation and export end to end on a tiny synthetic dataset: files written, faults named, PLY sequences readable."
import json
import math
import re
import shutil

import pytest
import torch
from PIL import Image

from avatar_nb.config import TemplateConfig
from avatar_nb.data import DatasetError, load_dataset_index
from avatar_nb.decoder import DecoderConfig
from avatar_nb.encoders import EncoderConfig
from avatar_nb.evaluate import EvalConfig, evaluate, metrics_table, write_eval
from avatar_nb.export import decode_person, export_frame, export_sequence, posed_splats, walk_vertices
from avatar_nb.losses import LpipsUnavailable
from avatar_nb.model import AvatarModel, ModelConfig
from avatar_nb.pairs import AvatarDataset, DataConfig, stack_views
from avatar_nb.ply import load_ply
from avatar_nb.synth import SynthConfig, generate_dataset
from avatar_nb.template import build_template

SMALL = ModelConfig(encoder=EncoderConfig(width=8, out_channels=16, z_dim=8, id_hidden=16), decoder=DecoderConfig(hidden=32))
DATA = DataConfig(size=64)
QUICK = EvalConfig(max_items=2, fps_frames=1, num_extremes=1)


def _reject_constant(name):
    raise ValueError(f"non-standard JSON constant {name}")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval") / "synth"
    generate_dataset(root, SynthConfig(identities=1, poses=3, views=3, size=64))
    return root


@pytest.fixture(scope="module")
def model(anny_body):
    torch.manual_seed(0)
    return AvatarModel(build_template(TemplateConfig(k=1, sh_degree=1), anny_body), SMALL)


def test_evaluate_writes_valid_files(dataset, model, tmp_path):
    index = load_dataset_index(dataset)
    res = evaluate(model, index, QUICK, DATA)
    paths = write_eval(tmp_path / "out", res)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["extremes.png", "metrics.json", "metrics.md"]
    back = json.loads(paths["json"].read_text(), parse_constant=_reject_constant)  # strict JSON: no NaN / Infinity
    assert back["absent_splits"] == ["test_identity"] and back["lpips"].startswith("unavailable")
    pose = back["splits"]["test_pose"]
    assert pose["count"] == 2 and [r["item"] for r in pose["frames"]] == [0, len(index.splits["test_pose"]) - 1]
    assert pose["lpips_full"] is None and pose["lpips_crop"] is None  # unavailable is null, never 0
    assert all(r["lpips_full"] is None and math.isfinite(r["psnr_crop"]) for r in pose["frames"])
    assert back["render_size"] == [64, 64] and back["render_fps"] > 0
    md = paths["md"].read_text()
    assert "| test_pose | 2 |" in md and "n/a" in md and md == metrics_table(res) + "\n"
    with Image.open(paths["png"]) as im: assert im.format == "PNG" and im.width > 100
    assert not list((tmp_path / "out").glob(".*part"))  # no temporary file left behind


def test_corrupt_and_missing_entries_are_named(dataset, model, tmp_path):
    root = tmp_path / "bad"
    shutil.copytree(dataset, root)
    index = load_dataset_index(root)  # checked while the files were sound
    frame, cam = index.splits["test_view"][0]
    image = root / "images" / cam / f"{frame}.png"
    image.write_bytes(b"not a png")
    cfg = EvalConfig(splits=["test_view"], fps_frames=0)
    with pytest.raises(DatasetError, match=rf"split 'test_view'.*{frame}/{cam}.*cannot decode image {re.escape(str(image))}"):
        evaluate(model, index, cfg, DATA)
    mask = root / "masks" / cam / f"{frame}.png"
    shutil.copy(dataset / "images" / cam / f"{frame}.png", image); mask.unlink()
    with pytest.raises(DatasetError, match=f"missing mask {re.escape(str(mask))}"):
        evaluate(model, index, cfg, DATA)


def test_no_split_and_required_lpips_are_refused(dataset, model):
    index = load_dataset_index(dataset)
    with pytest.raises(DatasetError, match="none of the evaluation splits \\['test_identity'\\]"):
        evaluate(model, index, EvalConfig(splits=["test_identity"]), DATA)
    try: import lpips  # noqa: F401
    except Exception: pass
    else: pytest.skip("lpips is importable here")
    with pytest.raises(LpipsUnavailable, match="eval.lpips='required'"):
        evaluate(model, index, EvalConfig(splits=["test_view"], lpips="required"), DATA)


def test_export_frame_names_unknown_frame(dataset, model, tmp_path):
    index = load_dataset_index(dataset)
    with pytest.raises(ValueError, match="frame 'f404' is not in"):
        export_frame(model, index, "f404", tmp_path / "x.ply", DATA)
    assert not (tmp_path / "x.ply").exists()
    path = export_frame(model, index, index.frames[1], tmp_path / "one.ply", DATA)
    s = load_ply(path)
    body = torch.as_tensor(index.vertices[1])
    assert s.num_gaussians == model.num_gaussians and (s.means.mean(0) - body.mean(0)).norm() < 0.05


def test_export_sequence_loads_back(dataset, model, anny_body, tmp_path):
    index = load_dataset_index(dataset)
    ds = AvatarDataset(index, "train", DataConfig(size=64, augment=False))
    decoded = decode_person(model, stack_views([ds.view(index.splits["train"][0])]))
    verts = walk_vertices(anny_body, index, index.frames[0], n=3)
    files = export_sequence(model, decoded, verts, tmp_path / "walk")
    assert [f.name for f in files] == ["frame0001.ply", "frame0002.ply", "frame0003.ply"]
    for f, v in zip(files, verts):
        torch.testing.assert_close(load_ply(f).means, posed_splats(model, decoded, v).means, atol=1e-5, rtol=0)
    assert (load_ply(files[1]).means - load_ply(files[0]).means).norm(dim=-1).max() > 0.05
