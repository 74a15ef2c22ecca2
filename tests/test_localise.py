"Localisation on the real Anny mesh against a direct per-Gaussian computation."
import math

import pytest
import torch

from avatar_nb.body import anny_bone
from avatar_nb.config import TemplateConfig
from avatar_nb.template import build_template
from avatar_nb.localise import Localiser, intrinsics, look_at, transform_points, pose_gaussians, quat_to_matrix


def test_against_direct_computation(anny_body):
    t = build_template(TemplateConfig(k=4, sh_degree=0), anny_body)
    p = anny_body.zero_params(2)
    p["pose"][1, anny_bone(anny_body, "upperarm01.L"), 1] = -math.radians(60)
    p["phenotype"][1] = torch.tensor([0.0, 0.8, 0.7, 0.6, 0.3, 0.5])
    verts = transform_points(look_at(torch.tensor([0.5, 0.3, 3.0]), torch.zeros(3)), anny_body(**p).vertices)
    K = intrinsics(512, 384, fov_degrees=45)
    loc = Localiser(t)(verts, K)
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, t.num_gaussians, (200,), generator=g)
    for b in range(2):
        for i in idx.tolist():
            f = int(t.face_idx[i])
            a, bb, c = verts[b, t.faces[f]]
            x = t.bary[i, 0] * a + t.bary[i, 1] * bb + t.bary[i, 2] * c
            torch.testing.assert_close(loc.x3d[b, i], x, atol=1e-5, rtol=0)
            u = K[0, 0] * x[0] / x[2] + K[0, 2]
            v = K[1, 1] * x[1] / x[2] + K[1, 2]
            torch.testing.assert_close(loc.x2d[b, i], torch.stack([u, v]), atol=1e-3, rtol=0)
            n = torch.linalg.cross(bb - a, c - a)
            torch.testing.assert_close(loc.frames[b, f, :, 2], n / n.norm(), atol=1e-4, rtol=0)
    # the posed Gaussian's third axis is its face normal (identity local rotation)
    pg = pose_gaussians(loc, t.face_idx, t.rotation, t.scale, t.opacity, t.sh)
    R = quat_to_matrix(pg.quats[1, idx])
    torch.testing.assert_close(R[..., 2], loc.frames[1, t.face_idx[idx], :, 2], atol=1e-4, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_localiser_follows_a_cuda_template():
    "A template on the GPU gives a Localiser on the GPU that places and projects as the CPU one does."
    t = build_template(TemplateConfig(mode="test", k=3, sh_degree=1))
    cpu, gpu = Localiser(t), Localiser(t.to("cuda"))
    assert gpu.regular == cpu.regular and gpu.faces.is_cuda and gpu.rest_area.is_cuda
    v = transform_points(look_at(torch.tensor([0.3, 0.8, 3.0]), torch.tensor([0.0, 0.8, 0.0])), t.rest_vertices.float())[None]
    K = intrinsics(64, 64)
    a, b = cpu(v, K), gpu(v.cuda(), K.cuda())
    torch.testing.assert_close(b.x2d.cpu(), a.x2d, atol=1e-4, rtol=0)
    torch.testing.assert_close(b.frames.cpu(), a.frames, atol=1e-5, rtol=0)
