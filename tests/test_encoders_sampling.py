"Image and identity encoders, and local feature sampling: shapes and errors, strides and alignment, identity averaging, the NLF backbone path (stand-in always, real checkpoint when NLF_CHECKPOINT names one), visibility."
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from avatar_nb.encoders import (ConvEncoder, EncoderConfig, IdentityEncoder, NLFBackboneEncoder, build_image_encoder,
                                foreground_mask, receptive_field_centre, shift_image, unroll, write_nlf_backbone_standin)
from avatar_nb.localise import Localiser, intrinsics, look_at, transform_points
from avatar_nb.sampling import (LocalSampler, SampledFeatures, pick_zbuffer_stride, pixel_to_grid, sample_map,
                                sampler_visibility, visible_points)

THICK = ("torso", "neck", "upperarm", "forearm", "thigh", "thigh_low", "shin")


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    return torch.jit.load(str(write_nlf_backbone_standin(tmp_path_factory.mktemp("nlf") / "backbone.torchscript")))


@pytest.fixture(scope="module")
def template(anny_body):
    from avatar_nb.config import TemplateConfig
    from avatar_nb.template import build_template
    return build_template(TemplateConfig(k=1, sh_degree=0), anny_body)


# ---------------------------------------------------------------- encoders

@pytest.mark.parametrize("stride", [4, 8])
def test_conv_encoder_shapes_and_centring(stride):
    enc = build_image_encoder(EncoderConfig(stride=stride, out_channels=24, width=8))
    out = enc(torch.rand(3, 3, 8 * stride, 5 * stride))
    assert out.shape == (3, enc.feat_dim, 8, 5) and enc.feat_dim == 24 and enc.stride == stride
    # the pixels the central feature cell depends on are centred on its block
    c = 128 // stride // 2
    assert torch.equal(receptive_field_centre(enc, 128), torch.tensor([(c + 0.5) * stride] * 2))


def test_conv_encoder_is_local():
    "A change far from a cell's receptive field does not change the cell (no image-wide statistics)."
    enc = ConvEncoder(16, 8, 8)
    x = torch.rand(1, 3, 128, 128)
    y = x.clone(); y[..., 96:, 96:] = torch.rand(1, 3, 32, 32)
    with torch.no_grad(): a, b = enc(x), enc(y)
    torch.testing.assert_close(a[..., :4, :4], b[..., :4, :4])
    assert not torch.allclose(a[..., -2:, -2:], b[..., -2:, -2:])


def test_encoder_shape_errors():
    enc = ConvEncoder(16, 8, 8)
    with pytest.raises(ValueError, match=r"multiples of the stride 8, got 36 x 64"): enc(torch.rand(1, 3, 36, 64))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\].*\[1, 1, 64, 64\]"): enc(torch.rand(1, 1, 64, 64))
    with pytest.raises(ValueError, match="stride must be a power of two"): ConvEncoder(16, 6)
    with pytest.raises(ValueError, match="encoder.kind"): EncoderConfig(kind="resnet")
    with pytest.raises(ValueError, match="encoder.nlf_tap"): EncoderConfig(nlf_tap="stride32")
    with pytest.raises(ValueError, match="needs the NLF model"): build_image_encoder(EncoderConfig(kind="nlf"))


def test_identity_averages_references():
    torch.manual_seed(0)
    ienc = IdentityEncoder(32, z_dim=16, hidden=24)
    Fm, P = torch.randn(3, 4, 32, 6, 5), torch.rand(3, 4, 40, 2) * torch.tensor([40.0, 48.0])
    z = ienc(Fm, P, (48, 40))
    singles = torch.stack([ienc(Fm[:, r], P[:, r], (48, 40)) for r in range(4)], 1)
    assert z.shape == (3, 16)
    torch.testing.assert_close(z, singles.mean(1))
    torch.testing.assert_close(ienc(Fm[:, 1:2], P[:, 1:2], (48, 40)), ienc(Fm[:, 1], P[:, 1], (48, 40)))
    with pytest.raises(ValueError, match=r"F_img must have shape \[B, 32, Hf, Wf\]"): ienc(Fm[:, :, :8], P, (48, 40))
    with pytest.raises(ValueError, match="R = 4"): ienc(Fm, P[:, :3], (48, 40))
    with pytest.raises(ValueError, match=r"points2d must have shape \[B, M, 2\]"):
        foreground_mask(torch.rand(2, 10, 3), (48, 40), (6, 5))


def test_foreground_mask_properties():
    pts = torch.stack(torch.meshgrid(torch.arange(16, 48.0), torch.arange(8, 24.0), indexing="xy"), -1).reshape(1, -1, 2)
    m = foreground_mask(pts, (64, 64), (8, 8))  # a block of pixels x 16..47, y 8..23 -> cells x 2..5, y 1..2
    assert m.shape == (1, 1, 8, 8) and m.min() >= 0 and m.max() <= 1
    assert (m[0, 0, 1:3, 2:6] > 0.3).all() and m[0, 0, 5:, :].sum() == 0
    bad = torch.tensor([[[float("nan"), 3.0], [-5.0, 3.0], [70.0, 3.0]]])
    assert foreground_mask(bad, (64, 64), (8, 8)).sum() == 0


# ---------------------------------------------------------------- NLF backbone

@pytest.mark.parametrize("tap,stride,channels", [("stride8", 8, 20), ("stride16", 16, 36)])
def test_nlf_backbone_standin(standin, tap, stride, channels):
    enc = build_image_encoder(EncoderConfig(kind="nlf", nlf_tap=tap), standin)
    assert (enc.stride, enc.feat_dim) == (stride, channels)  # read from the dry run, the stand-in is not NLF-sized
    out = enc(torch.rand(2, 3, 96, 64))
    assert out.shape == (2, channels, 96 // stride, 64 // stride) and out.dtype == torch.float32
    # equal to running the backbone's own modules on the shifted image, up to the cut
    img = torch.rand(1, 3, 64, 64)
    ref = shift_image(img, enc.shift)
    for m in unroll(standin.crop_model.backbone)[:len(enc.layers)]: ref = m(ref)
    torch.testing.assert_close(enc(img), ref)
    # cells centred on their blocks after the shift, on pixel s c + 0.5 without it
    assert torch.equal(receptive_field_centre(enc, 128, (3, 4)), torch.tensor([4.5 * stride, 3.5 * stride]))
    raw = NLFBackboneEncoder(standin, tap, cell_centre=stride / 2)
    assert torch.equal(receptive_field_centre(raw, 128, (3, 4)), torch.tensor([4 * stride + 0.5, 3 * stride + 0.5]))
    with pytest.raises(ValueError, match=f"multiples of the stride {stride}"): enc(torch.rand(1, 3, 96 + stride // 2, 64))


def test_nlf_backbone_frozen_and_trainable(standin):
    frozen = NLFBackboneEncoder(standin, "stride8").train()
    assert not any(m.training for m in frozen.layers) and not any(p.requires_grad for p in frozen.parameters())
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    frozen(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # gradients still reach the image
    tuned = NLFBackboneEncoder(standin, "stride8", trainable=True).train()
    tuned(torch.rand(2, 3, 32, 32)).sum().backward()
    assert any(m.training for m in tuned.layers) and all(p.grad is not None for p in tuned.parameters())


def test_nlf_backbone_refusals(standin):
    with pytest.raises(ValueError, match="no crop_model.backbone"): NLFBackboneEncoder(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="tap must be one of"): NLFBackboneEncoder(standin, "stride4")

    class Holder(torch.nn.Module):
        def __init__(self, bb):
            super().__init__()
            self.crop_model = torch.nn.Module(); self.crop_model.backbone = bb

    with pytest.raises(ValueError, match="no module outputs stride 8"):
        NLFBackboneEncoder(Holder(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, 2, 1))), "stride8")
    seq = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, 2, 1))
    seq.forward = lambda x: seq[0](x) * 2  # a Sequential whose forward is not its chain
    with pytest.raises(ValueError, match="does not reproduce its output"): NLFBackboneEncoder(Holder(seq), "stride8")


@pytest.mark.skipif(not os.environ.get("NLF_CHECKPOINT"), reason="set NLF_CHECKPOINT to an NLF .torchscript file")
def test_nlf_backbone_real_checkpoint():
    from avatar_nb.nlf import load_nlf
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_nlf(os.environ["NLF_CHECKPOINT"], dev)
    if dev == "cpu": model = model.float()  # half-precision convolutions are a GPU thing
    for tap, s in (("stride8", 8), ("stride16", 16)):
        enc = NLFBackboneEncoder(model, tap)
        out = enc(torch.rand(2, 3, 256, 192, device=dev))
        assert out.shape == (2, enc.feat_dim, 256 // s, 192 // s) and torch.isfinite(out).all()
    # stride-8 stages have no squeeze-excitation, so a cell's receptive field is local: centred on its block
    enc = NLFBackboneEncoder(model.float(), "stride8")
    assert torch.equal(receptive_field_centre(enc, 256, (16, 16)), torch.tensor([132.0, 132.0]))


# ---------------------------------------------------------------- sampling

def test_pixel_to_grid_round_trip():
    im = torch.rand(1, 4, 32, 64)
    ys, xs = torch.meshgrid(torch.arange(32) + 0.5, torch.arange(64) + 0.5, indexing="ij")
    xy = torch.stack([xs, ys], -1).reshape(1, -1, 2)
    assert torch.equal(sample_map(im, xy, (32, 64)).transpose(1, 2).reshape(1, 4, 32, 64), im)
    fm = im[..., ::8, ::8].contiguous()  # any [4, 8] map tiling the image: cell (r, c) centred at ((c + .5) 8, (r + .5) 8)
    cells = torch.stack([(torch.arange(8)[None].expand(4, 8) + 0.5) * 8, (torch.arange(4)[:, None].expand(4, 8) + 0.5) * 8], -1)
    assert torch.equal(sample_map(fm, cells.reshape(1, -1, 2), (32, 64)), fm.flatten(2).transpose(1, 2))
    torch.testing.assert_close(pixel_to_grid(torch.tensor([0.0, 32.0]), 64, 32), torch.tensor([-1.0, 1.0]))


def test_visible_points_rules():
    xy = torch.tensor([[[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [12.0, 1.0], [-0.5, 1.0], [1.0, 16.0], [5.0, 5.0]]])
    z = torch.tensor([[1.0, 1.015, 1.1, 5.0, 1.0, 1.0, -2.0]])
    assert visible_points(xy, z, (16, 16), (2, 2)).tolist() == [[True, True, False, True, False, False, False]]
    with pytest.raises(ValueError, match=r"depth \[B, N\]"): visible_points(xy, z[:, :2], (16, 16), (2, 2))


def test_sampler_gradients_and_unseen():
    torch.manual_seed(0)
    s = LocalSampler(5)
    Fm = torch.randn(2, 5, 4, 6, requires_grad=True)
    xy = torch.rand(2, 50, 2) * torch.tensor([48.0, 32.0])
    z = 2 + torch.rand(2, 50)
    xy[:, :3] = torch.tensor([-4.0, 3.0]); xy[:, 3] = float("nan")  # outside the image, not finite
    out = s(Fm, xy, z, (32, 48))
    assert isinstance(out, SampledFeatures) and out.features.shape == (2, 50, 5)
    assert not out.visible[:, :4].any() and torch.isfinite(out.features).all()
    out.features.square().sum().backward()
    assert torch.isfinite(Fm.grad).all() and Fm.grad.abs().sum() > 0
    hidden = (~out.visible).sum()
    torch.testing.assert_close(s.unseen.grad, torch.zeros(5))  # unseen is zero, so d/d unseen of its square is 0
    s.zero_grad(); s(Fm, xy, z, (32, 48)).features.sum().backward()
    torch.testing.assert_close(s.unseen.grad, torch.full((5,), float(hidden)))
    sd = LocalSampler(3).double()
    Fd = torch.randn(1, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f: sd(f, xy[:1, 4:20].double(), z[:1, 4:20].double(), (32, 32)).features, (Fd,))


def test_sampler_shape_errors():
    s = LocalSampler(4)
    Fm, xy, z = torch.randn(2, 4, 4, 4), torch.rand(2, 7, 2) * 32, torch.ones(2, 7)
    with pytest.raises(ValueError, match=r"F_img must have shape \[B, 4, Hf, Wf\], got \[2, 3, 4, 4\]"):
        s(Fm[:, :3], xy, z, (32, 32))
    with pytest.raises(ValueError, match=r"B = 2 \(as F_img\)"): s(Fm, xy[:1], z[:1], (32, 32))
    with pytest.raises(ValueError, match=r"depth \[B, N\]"): s(Fm, xy, z[:, :3], (32, 32))
    with pytest.raises(ValueError, match="must tile the 32 x 40 image"): s(Fm, xy, z, (32, 40))


def _thick(anny_body, template):
    from avatar_nb.people import PART_NAMES, vertex_parts
    part = torch.tensor(vertex_parts(anny_body))[template.faces[template.face_idx, 0]]
    return torch.isin(part, torch.tensor([PART_NAMES.index(n) for n in THICK]))


@pytest.mark.parametrize("eye,facing_front", [((0.0, 0.0, 3.0), True), ((0.0, 0.0, -3.0), False)])
def test_front_visible_back_not(anny_body, template, eye, facing_front):
    "The Anny template seen from the front (and from behind): the side facing the camera is seen, the other is not."
    E = look_at(torch.tensor(eye), torch.tensor([0.0, -0.05, 0.0]))
    loc = Localiser(template)(transform_points(E, template.rest_vertices)[None], intrinsics(256, 256, 40))
    n = loc.frames[0, template.face_idx, :, 2]
    facing = -(n * F.normalize(loc.x3d[0], dim=-1)).sum(-1)
    vis = LocalSampler(8)(torch.zeros(1, 8, 32, 32), loc.x2d, loc.depth, (256, 256)).visible[0]
    th = _thick(anny_body, template)
    assert vis[th & (facing > 0.5)].float().mean() > 0.9
    assert vis[th & (facing < -0.5)].float().mean() < 0.02
    # the body's front (+z in the body frame) is what a camera at +z sees
    front = template.x_can[:, 2] > template.x_can[th, 2].median()
    assert (vis[th & front].float().mean() > vis[th & ~front].float().mean()) == facing_front


@pytest.mark.parametrize("k,size,angle", [(1, 512, 200), (4, 256, 90)])
def test_visibility_against_ray_casting(anny_body, k, size, angle):
    "Against exact visibility from ray casting the posed mesh: few hidden Gaussians on thick parts leak through."
    pytest.importorskip("embreex")
    from avatar_nb.config import TemplateConfig
    from avatar_nb.people import sample_person, walk
    from avatar_nb.synth import PosedScene, camera_rays, render_person, ring_camera
    from avatar_nb.template import build_template
    t = build_template(TemplateConfig(k=k, sh_degree=0), anny_body)
    cam = ring_camera(angle, size)
    _, verts = render_person(anny_body, sample_person(np.random.default_rng(5)), walk(0.6), [cam])
    loc = Localiser(t)(transform_points(torch.tensor(cam["viewmat"]).float(), torch.tensor(verts).float())[None],
                       torch.tensor(cam["K"]).float())
    o, d = camera_rays(cam["K"], cam["viewmat"], size, size)
    _, ray, hit = PosedScene(verts, anny_body.faces.numpy()).caster.intersects_id(o, d, multiple_hits=False, return_locations=True)
    depth = torch.full((size * size,), math.inf)
    depth[torch.tensor(ray)] = torch.tensor(hit @ cam["viewmat"][:3, :3].T + cam["viewmat"][:3, 3])[:, 2].float()
    px = loc.x2d[0].floor().long().clamp(0, size - 1)
    truth = loc.depth[0] <= depth[px[:, 1] * size + px[:, 0]] + 0.02
    vis = LocalSampler(4)(torch.zeros(1, 4, size // 8, size // 8), loc.x2d, loc.depth, (size, size)).visible[0]
    th = _thick(anny_body, t)
    false_visible = (vis & ~truth & th).sum() / (~truth & th).sum()
    false_hidden = (~vis & truth & th).sum() / (truth & th).sum()
    print(f"k={k} {size}px {angle}deg: false visible {false_visible:.4f}, false hidden {false_hidden:.4f} (thick parts)")
    assert false_visible < 0.03 and false_hidden < 0.35, (false_visible, false_hidden)
    assert torch.equal(vis, sampler_visibility(loc.x2d, loc.depth, (size, size), 8)[0])


def test_zbuffer_stride_follows_density():
    g = torch.Generator().manual_seed(0)
    dense = torch.rand(1, 20000, 2, generator=g) * 64  # ~5 points per pixel of a 64 x 64 image
    assert pick_zbuffer_stride(dense, (64, 64), 8) == 1
    assert pick_zbuffer_stride(dense * 4, (256, 256), 8) == 4  # the same points over 16x the pixels
    assert pick_zbuffer_stride(dense[:, :5], (64, 64), 8) == 8  # too few for any: the coarsest allowed
