"The avatar model on CUDA: the bfloat16 decoder against float32 (its behaviour on the CPU is checked in nbs/13_decoder and nbs/14_model)."
import math

import pytest
import torch
from torch import nn

from avatar_nb.config import TemplateConfig
from avatar_nb.template import build_template
from avatar_nb.localise import intrinsics, look_at, transform_points
from avatar_nb.encoders import EncoderConfig
from avatar_nb.decoder import DecoderConfig
from avatar_nb.model import AvatarModel, ModelConfig

SMALL = ModelConfig(encoder=EncoderConfig(width=8, out_channels=16, z_dim=8, id_hidden=16),
                    decoder=DecoderConfig(hidden=32))


def camera_frame(vertices, azimuth_degrees=0.0, distance=3.0):
    "Vertices [V, 3] (world, y up) seen by a camera on a ring around the mesh's centre."
    c = (vertices.amax(0) + vertices.amin(0)) / 2
    a = math.radians(azimuth_degrees)
    E = look_at(c + distance * torch.tensor([math.sin(a), 0.0, math.cos(a)]), c)
    return transform_points(E, vertices)


def striped_images(B, H, W):
    "Images [B, 3, H, W] with a vertical colour ramp, different per batch element."
    ys = torch.linspace(0, 1, H)[:, None].expand(H, W)
    return torch.stack([torch.stack([ys, torch.full_like(ys, 0.2 + 0.3 * b), 1 - ys]) for b in range(B)])


@pytest.fixture()
def tiny():
    return build_template(TemplateConfig(mode="test", k=3, sh_degree=1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bf16_decoder_on_cuda_matches_float32(tiny):
    d = torch.device("cuda")
    torch.manual_seed(0)
    m32 = AvatarModel(tiny, SMALL).to(d)
    nn.init.normal_(m32.decoder.out.weight, std=0.1)
    cfg16 = ModelConfig(encoder=SMALL.encoder, decoder=DecoderConfig(hidden=32, bf16=True))
    m16 = AvatarModel(tiny, cfg16).to(d)
    m16.load_state_dict(m32.state_dict())
    v = camera_frame(tiny.rest_vertices)[None].expand(2, 6, 3).to(d)
    K = intrinsics(64, 64)[None].expand(2, 3, 3).to(d)
    img = striped_images(2, 64, 64).to(d)
    a, b = m32(img, v, K, v), m16(img, v, K, v)
    for x, y in ((a.means, b.means), (a.scales, b.scales), (a.opacities, b.opacities), (a.sh, b.sh)):
        assert y.dtype == torch.float32
        torch.testing.assert_close(y, x, atol=2e-2 * float(x.abs().max()), rtol=0)
    torch.testing.assert_close(b.quats.norm(dim=-1), torch.ones(2, 24, device=d), atol=1e-5, rtol=0)
    (b.sh.square().mean() + b.scales.mean()).backward()
    grads = [p.grad for p in m16.image_encoder.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
