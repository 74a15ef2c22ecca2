"The avatar model end to end: initial state, activation bounds, gradients, shape errors, pose following."
import math

import pytest
import torch
from torch import nn

from avatar_nb.config import TemplateConfig
from avatar_nb.template import SH_C0, build_template
from avatar_nb.localise import intrinsics, look_at, quat_to_matrix, transform_points
from avatar_nb.encoders import EncoderConfig
from avatar_nb.decoder import DecoderConfig, activate, raw_channels
from avatar_nb.model import AvatarModel, ModelConfig, colour_hint

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


def test_init_equals_template_on_anny(anny_body):
    t = build_template(TemplateConfig(k=4), anny_body)
    torch.manual_seed(0)
    model = AvatarModel(t)
    verts = camera_frame(anny_body.rest_vertices.detach())[None]
    K = intrinsics(64, 64, fov_degrees=40)[None]
    img = striped_images(1, 64, 64)
    with torch.no_grad():
        dec = model.encode(img, verts, K)
        loc = model.localiser(verts, K)
        vis = model.sampler(model.image_encoder(img), loc.x2d, loc.depth, (64, 64)).visible
    N = t.num_gaussians
    assert dec.sh.shape == (1, N, 16, 3)
    assert torch.equal(dec.rotation[0], t.rotation) and torch.equal(dec.scale[0], t.scale)
    torch.testing.assert_close(dec.opacity[0], t.opacity, atol=1e-6, rtol=0)
    assert torch.equal(dec.sh[0, :, 1:], t.sh[:, 1:]) and torch.equal(dec.offset, torch.zeros(1, N))
    # the DC term is the colour hint: image colour where seen, the mean seen colour elsewhere
    rgb = 0.5 + SH_C0 * dec.sh[0, :, 0]
    torch.testing.assert_close(rgb, colour_hint(img, loc.x2d, vis)[0], atol=1e-6, rtol=0)
    assert 0.2 < vis.float().mean() < 0.8
    torch.testing.assert_close(rgb[~vis[0]], rgb[vis[0]].mean(0).expand(int((~vis[0]).sum()), 3), atol=1e-5, rtol=0)
    # without the hint the colour is the template's
    plain = AvatarModel(t, ModelConfig(colour_hint=False))
    with torch.no_grad():
        assert torch.equal(plain.encode(img, verts, K).sh[0], t.sh)


@pytest.mark.parametrize("K,offset", [(1, True), (16, True), (4, False)])
def test_activation_bounds_for_extreme_raw_values(K, offset):
    cfg = DecoderConfig(offset=offset, max_offset=0.03, max_log_scale=1.5)
    N, R = 50, sum(raw_channels(K, offset).values())
    g = torch.Generator().manual_seed(K)
    rot = torch.randn(N, 4, generator=g)
    scale = torch.rand(N, 3, generator=g) * 0.02 + 1e-4
    opacity = torch.rand(N, generator=g) * 0.98 + 0.01
    sh = torch.randn(N, K, 3, generator=g)
    values = torch.tensor([-1e30, -1e6, -50.0, -3.0, 0.0, 3.0, 50.0, 1e6, 1e30])
    raw = values[torch.randint(0, len(values), (4, N, R), generator=g)]
    raw[0] = 1e30; raw[1] = -1e30  # every channel at both extremes
    hint = torch.rand(4, N, 3, generator=g)
    for d in (activate(raw, rot, scale, opacity, sh, cfg), activate(raw, rot, scale, opacity, sh, cfg, hint),
              activate(raw.bfloat16(), rot, scale, opacity, sh, cfg)):
        for v in (d.rotation, d.scale, d.opacity, d.sh, d.offset):
            assert v.dtype == torch.float32 and torch.isfinite(v).all()
        torch.testing.assert_close(d.rotation.norm(dim=-1), torch.ones(4, N), atol=1e-5, rtol=0)
        ratio = d.scale / scale
        assert (ratio >= math.exp(-1.5) * (1 - 1e-5)).all() and (ratio <= math.exp(1.5) * (1 + 1e-5)).all()
        assert (d.scale > 0).all()
        assert ((d.opacity > 0) & (d.opacity < 1)).all()
        assert (d.offset.abs() <= 0.03).all()
        if offset: assert d.offset.abs().max() > 0.029
        else: assert (d.offset == 0).all()
    # the extremes are reached: the bounds are tight, not just never violated
    d = activate(raw, rot, scale, opacity, sh, cfg)
    assert math.isclose(float((d.scale[0] / scale).max()), math.exp(1.5), rel_tol=1e-4)
    assert math.isclose(float((d.scale[1] / scale).min()), math.exp(-1.5), rel_tol=1e-4)


def test_gradients_reach_the_encoders_and_the_unseen_feature(tiny):
    torch.manual_seed(0)
    model = AvatarModel(tiny, SMALL)
    W = H = 64
    K = intrinsics(W, H, fov_degrees=45)[None].expand(2, 3, 3)
    src = camera_frame(tiny.rest_vertices, 20.0)[None].expand(2, 6, 3)
    tgt = camera_frame(tiny.rest_vertices, 200.0)[None].expand(2, 6, 3)  # the back: what the source did not see
    img = striped_images(2, H, W)
    target_rgb = torch.rand(2, 1, H, W, 3, generator=torch.Generator().manual_seed(1))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)

    def step():
        opt.zero_grad()
        out = model(img, src, K, tgt).render(K, W, H, background=torch.ones(3))
        loss = ((out.rgb - target_rgb) ** 2).mean() + (1 - out.alpha).mean()
        loss.backward()
        return loss

    step()
    # at initialisation only the last layer learns (it is zero, so nothing behind it gets a gradient)
    assert model.decoder.out.weight.grad.abs().sum() > 0
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.image_encoder.parameters())
    opt.step()
    step()
    loc = model.localiser(src, K)
    vis = model.sampler(model.image_encoder(img), loc.x2d, loc.depth, (H, W)).visible
    assert vis.any() and not vis.all()
    for name, mod in (("image encoder", model.image_encoder), ("identity encoder", model.identity_encoder),
                      ("decoder", model.decoder)):
        grads = [p.grad for p in mod.parameters() if p.requires_grad]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads) > 0, name
    first_conv = next(p for p in model.image_encoder.parameters() if p.dim() == 4)
    assert first_conv.grad.abs().sum() > 0  # all the way to the first layer
    assert model.sampler.unseen.grad is not None and model.sampler.unseen.grad.abs().sum() > 0


def test_clear_errors_for_bad_shapes(tiny):
    model = AvatarModel(tiny, SMALL)
    v = camera_frame(tiny.rest_vertices)[None].expand(2, 6, 3)
    K = intrinsics(64, 64)[None].expand(2, 3, 3)
    img = striped_images(2, 64, 64)
    cases = [
        (lambda: model.encode(img[..., :60], v, K), "multiples of 8"),
        (lambda: model.encode(img[..., :60, :], v, K), "64 x 60 (W x H)"),
        (lambda: model.encode(img, v[:, :4], K), "4 vertices, but the template's body mesh has 6"),
        (lambda: model.encode(img, v[:1], K), "batch size 1 differs from src_images' 2"),
        (lambda: model.encode(img, v, K[:1]), "src_K must have shape [B=2, 3, 3]"),
        (lambda: model.encode(img, v, torch.eye(4)), "src_K must have shape"),
        (lambda: model.encode(img[:, None].expand(2, 3, 3, 64, 64), v, K), "src_vertices must have shape [B=2, R=3, V=6, 3]"),
        (lambda: model.encode(img[:, None].expand(2, 3, 3, 64, 64), v[:, None].expand(2, 2, 6, 3), K),
         "2 source views but src_images have 3"),
        (lambda: model.encode(img[:, :1], v, K), "src_images must have shape [B, 3, H, W] or [B, R, 3, H, W]"),
        (lambda: model.encode(img[0], v, K), "src_images must have shape"),
        (lambda: model.encode(img, v, K, src_points2d=torch.zeros(2, 10, 3)), "src_points2d must have shape"),
        (lambda: model.encode(img, v.clone().index_fill_(1, torch.tensor([2]), float("nan")), K), "NaN"),
    ]
    for fn, msg in cases:
        with pytest.raises(ValueError) as e: fn()
        assert msg in str(e.value), (msg, str(e.value))
    with torch.no_grad(): dec = model.encode(img, v, K)
    for fn, msg in [(lambda: model.place(dec, v[:1]), "batch size 1 differs from the decoded Gaussians' 2"),
                    (lambda: model.place(dec, v[:, :5]), "5 vertices, but the template's body mesh has 6"),
                    (lambda: model.decoder(torch.zeros(2, 8), torch.zeros(2, 24, 15)), "features must have shape [B=2, N=24, C=16]"),
                    (lambda: model.decoder(torch.zeros(2, 9), torch.zeros(2, 24, 16)), "z_id must have shape [B, 8]"),
                    (lambda: model.place(dec, v).render(K[:1].expand(3, 3, 3), 64, 64), "Ks must have shape [B=2, 3, 3]")]:
        with pytest.raises(ValueError) as e: fn()
        assert msg in str(e.value), (msg, str(e.value))


def test_an_encoder_with_the_wrong_output_is_named(tiny):
    model = AvatarModel(tiny, SMALL)
    real = model.image_encoder
    class Wrong(nn.Module):
        feat_dim, stride = real.feat_dim, real.stride
        def forward(self, x): return real(x)[..., :-1, :]
    model.image_encoder = Wrong()
    v = camera_frame(tiny.rest_vertices)[None]
    with pytest.raises(ValueError, match=r"the image encoder returned \[1, 16, 7, 8\].*expected \[1, 16, 8, 8\]"):
        model.encode(striped_images(1, 64, 64), v, intrinsics(64, 64)[None])


def test_placed_gaussians_follow_a_rigidly_moved_target(anny_body):
    t = build_template(TemplateConfig(k=1, sh_degree=1), anny_body)
    torch.manual_seed(0)
    model = AvatarModel(t, ModelConfig(decoder=DecoderConfig(hidden=64)))
    nn.init.normal_(model.decoder.out.weight, std=0.2)  # a decoder that moves away from the template
    rest = anny_body.rest_vertices.detach()
    src = camera_frame(rest)[None]
    K = intrinsics(64, 64)[None]
    R = quat_to_matrix(torch.tensor([0.9, -0.2, 0.35, 0.1], dtype=torch.float64))
    shift = torch.tensor([0.3, -0.2, 1.0], dtype=torch.float64)
    with torch.no_grad():
        dec = model.encode(striped_images(1, 64, 64), src, K)
        moved = src.double() @ R.T + shift  # float64: face frames of Anny's tiniest faces
        a, b = model.place(dec, src.double()), model.place(dec, moved)
    assert dec.offset.abs().max() > 1e-3 and (dec.rotation[0] - t.rotation).abs().max() > 1e-2
    torch.testing.assert_close(b.means, a.means @ R.T + shift, atol=1e-6, rtol=0)
    torch.testing.assert_close(quat_to_matrix(b.quats), R @ quat_to_matrix(a.quats), atol=1e-6, rtol=0)
    torch.testing.assert_close(b.scales, a.scales, atol=1e-9, rtol=1e-6)
    assert torch.equal(b.opacities, a.opacities) and torch.equal(b.sh, a.sh)
    # and the offsets are along the placed normals: the same distance from the surface in both poses
    surface = moved[0, t.faces[t.face_idx]].mul(t.bary.double()[..., None]).sum(1)
    torch.testing.assert_close((b.means - surface).norm(dim=-1), dec.offset.abs().double(), atol=1e-7, rtol=0)
    # a float32 placement agrees up to float32's rounding on the smallest faces
    b32 = model.place(dec, moved.float())
    torch.testing.assert_close(b32.means, b.means.float(), atol=1e-5, rtol=0)


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
