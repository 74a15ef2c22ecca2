"The smplx path without licensed files: tiny SMPL-X / SMPL layout files loaded through the smplx package."
import math

import numpy as np
import pytest
import torch

from avatar_nb.body import SmplxBody, load_body_model, find_model_file, axis_angle_to_matrix
from avatar_nb.config import BodyConfig, TemplateConfig
from avatar_nb.template import build_template


@pytest.mark.parametrize("kind,joints", [("smplx", 55), ("smpl", 24)])
def test_tiny_model_forward(tiny_model_dir, kind, joints):
    m = load_body_model(BodyConfig(model=kind, model_path=str(tiny_model_dir)))
    assert isinstance(m, SmplxBody) and m.name == kind
    p = m.zero_params(2)
    out = m(**p)
    assert out.vertices.shape == (2, m.num_vertices, 3) and out.joints.shape == (2, joints, 3)
    torch.testing.assert_close(out.vertices[0], m.rest_vertices + 0 * out.vertices[0], atol=1e-5, rtol=0)
    # global_orient rotates the whole body about the root joint
    R = axis_angle_to_matrix(torch.tensor([0.0, math.pi / 2, 0.0]))
    p["global_orient"][1] = torch.tensor([0.0, math.pi / 2, 0.0])
    out = m(**p)
    root = out.joints[0, 0]
    torch.testing.assert_close(out.vertices[1] - root, (out.vertices[0] - root) @ R.T, atol=1e-4, rtol=0)
    # betas deform the shape
    p = m.zero_params(1); p["betas"][0, 0] = 2.0
    assert (m(**p).vertices[0] - m.rest_vertices).abs().max() > 1e-3
    # a bent joint moves the vertices it skins
    p = m.zero_params(1); p["body_pose"][0, 30:33] = torch.tensor([0.8, 0.0, 0.0])
    assert (m(**p).vertices[0] - m.rest_vertices).abs().max() > 1e-2


def test_file_path_or_folder(tiny_model_dir):
    f = find_model_file("smplx", tiny_model_dir)
    assert f == tiny_model_dir / "smplx" / "SMPLX_NEUTRAL.npz"
    a = load_body_model(BodyConfig(model="smplx", model_path=str(f)))
    b = load_body_model(BodyConfig(model="smplx", model_path=str(tiny_model_dir / "smplx")))
    torch.testing.assert_close(a.rest_vertices, b.rest_vertices)


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="smpl-x.is.tue.mpg.de"):
        load_body_model(BodyConfig(model="smplx", model_path=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match="SMPL_FEMALE"):
        load_body_model(BodyConfig(model="smpl", model_path=str(tmp_path), gender="female"))
    bad = tmp_path / "SMPLX_NEUTRAL.npz"
    np.savez(bad, v_template=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="not a usable SMPLX model file"):
        load_body_model(BodyConfig(model="smplx", model_path=str(bad)))


def test_wrong_parameter_shapes(tiny_model_dir):
    m = load_body_model(BodyConfig(model="smplx", model_path=str(tiny_model_dir)))
    with pytest.raises(ValueError, match=r"'body_pose' must have shape \[1, 63\]"):
        m(body_pose=torch.zeros(1, 69))
    with pytest.raises(KeyError, match="poses"):
        m(poses=torch.zeros(1, 3))
    with pytest.raises(ValueError, match="batch size"):
        m(body_pose=torch.zeros(2, 63), betas=torch.zeros(3, 10))


def test_template_modes_on_smplx_and_topology_guard(tiny_model_dir, tmp_path, anny_body):
    sx = load_body_model(BodyConfig(model="smplx", model_path=str(tiny_model_dir)))
    path = tmp_path / "smplx_k2.npz"
    t = build_template(TemplateConfig(mode="generate", k=2, sh_degree=0, path=str(path)), sx)
    assert t.num_gaussians == 2 * sx.num_faces and t.body_model == "smplx"
    t2 = build_template(TemplateConfig(mode="default", k=2, sh_degree=0, path=str(path)), sx)
    torch.testing.assert_close(t2.x_can, t.x_can)
    with pytest.raises(ValueError, match="topology mismatch"):
        build_template(TemplateConfig(mode="default", k=2, sh_degree=0, path=str(path)), anny_body)
    sm = load_body_model(BodyConfig(model="smpl", model_path=str(tiny_model_dir)))
    with pytest.raises(ValueError, match="topology mismatch"):
        build_template(TemplateConfig(mode="default", k=2, sh_degree=0, path=str(path)), sm)
