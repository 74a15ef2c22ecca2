"The tiled torch rasterizer against a dense, tile-free reference written from the formulas (float64)."
import math

import pytest
import torch
import torch.nn.functional as F

from avatar_nb.render import render
from avatar_nb.rasterize import sh_basis


def reference(means, quats, scales, opac, rgb, viewmat, K, W, H, eps2d=0.3, near=0.01):
    "Every pixel against every Gaussian: EWA splats, front-to-back, gsplat's thresholds; no culling tricks."
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    q = F.normalize(quats, dim=-1)
    w, x, y, z = q.unbind(-1)
    Rq = torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
                      2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
                      2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1).reshape(-1, 3, 3)
    cov = Rq @ torch.diag_embed(scales ** 2) @ Rq.transpose(1, 2)
    mc = means @ R.T + t
    covc = R @ cov @ R.T
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    img = torch.zeros(H, W, 3, dtype=means.dtype); acc = torch.zeros(H, W, dtype=means.dtype)
    order = torch.argsort(mc[:, 2])
    T = torch.ones(H, W, dtype=means.dtype)
    done = torch.zeros(H, W, dtype=torch.bool)
    ys, xs = torch.meshgrid(torch.arange(H, dtype=means.dtype) + 0.5, torch.arange(W, dtype=means.dtype) + 0.5, indexing="ij")
    for i in order.tolist():
        X, Y, Z = mc[i]
        if Z < near: continue
        tx = Z * torch.clamp(X / Z, -(cx / fx + 0.3 * 0.5 * W / fx), (W - cx) / fx + 0.3 * 0.5 * W / fx)
        ty = Z * torch.clamp(Y / Z, -(cy / fy + 0.3 * 0.5 * H / fy), (H - cy) / fy + 0.3 * 0.5 * H / fy)
        J = torch.tensor([[fx / Z, 0, -fx * tx / Z ** 2], [0, fy / Z, -fy * ty / Z ** 2]], dtype=means.dtype)
        c2 = J @ covc[i] @ J.T + eps2d * torch.eye(2, dtype=means.dtype)
        inv = torch.linalg.inv(c2)
        u, v = fx * X / Z + cx, fy * Y / Z + cy
        dx, dy = xs - u, ys - v
        sigma = 0.5 * (inv[0, 0] * dx * dx + inv[1, 1] * dy * dy) + inv[0, 1] * dx * dy
        a = torch.clamp(opac[i] * torch.exp(-sigma), max=0.999)
        a = torch.where((sigma >= 0) & (a >= 1 / 255) & ~done, a, torch.zeros_like(a))
        nxt = T * (1 - a)
        stop = (nxt <= 1e-4) & (a > 0)
        a = torch.where(stop, torch.zeros_like(a), a)
        done |= stop
        img += (a * T)[..., None] * rgb[i]
        acc += a * T
        T = T * (1 - a)
    return img, acc


@pytest.mark.parametrize("tile,max_elems", [(8, 1 << 22), (4, 5000), (16, 1 << 22)])
def test_matches_dense_reference(tile, max_elems):
    g = torch.Generator().manual_seed(7)
    n, W, H = 60, 40, 30
    means = torch.rand(n, 3, generator=g, dtype=torch.float64) * torch.tensor([1.2, 1.0, 0.6], dtype=torch.float64) \
        - torch.tensor([0.6, 0.5, -1.7], dtype=torch.float64)
    quats = torch.randn(n, 4, generator=g, dtype=torch.float64)
    scales = torch.rand(n, 3, generator=g, dtype=torch.float64) * 0.08 + 0.01
    opac = torch.rand(n, generator=g, dtype=torch.float64) * 0.9 + 0.1
    opac[:5] = 0.999  # opaque splats make pixels terminate early
    rgb = torch.rand(n, 3, generator=g, dtype=torch.float64)
    # two cameras: one straight on, one rotated and shifted (Gaussians near the border and behind the camera)
    vm = torch.eye(4, dtype=torch.float64).repeat(2, 1, 1)
    a = 0.6
    vm[1, :3, :3] = torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]], dtype=torch.float64)
    vm[1, :3, 3] = torch.tensor([-0.5, 0.1, 0.2], dtype=torch.float64)
    K = torch.tensor([[35.0, 0, 21], [0, 33.0, 14], [0, 0, 1]], dtype=torch.float64).expand(2, 3, 3)
    out = render(means, quats, scales, opac, rgb, vm, K, W, H, tile_size=tile, max_elems=max_elems)
    for c in range(2):
        img, acc = reference(means, quats, scales, opac, rgb, vm[c], K[c], W, H)
        torch.testing.assert_close(out.rgb[c], img, atol=1e-9, rtol=0)
        torch.testing.assert_close(out.alpha[c, ..., 0], acc, atol=1e-9, rtol=0)
    assert (out.alpha > 0.99).any() and (out.alpha == 0).any()  # the scene has opaque and empty pixels


def test_batched_gaussians_render_per_batch():
    "means [B, N, 3] with cameras [B, C, 4, 4]: each batch entry is rendered on its own."
    g = torch.Generator().manual_seed(2)
    B, n, C = 2, 30, 3
    s = dict(means=torch.rand(B, n, 3, generator=g) - torch.tensor([0.5, 0.5, -1.5]), quats=torch.randn(B, n, 4, generator=g),
             scales=torch.rand(B, n, 3, generator=g) * 0.05 + 0.01, opacities=torch.rand(B, n, generator=g),
             colors=torch.randn(B, n, 9, 3, generator=g) * 0.3)
    vm = torch.eye(4).repeat(B, C, 1, 1); vm[:, 1, 0, 3] = 0.2; vm[:, 2, 1, 3] = -0.1
    K = torch.tensor([[30.0, 0, 16], [0, 30.0, 16], [0, 0, 1]]).expand(B, C, 3, 3)
    bg = torch.rand(B, C, 3, generator=g)
    out = render(**s, viewmats=vm, Ks=K, width=32, height=32, background=bg)
    assert out.rgb.shape == (B, C, 32, 32, 3)
    for b in range(B):
        one = render(**{k: v[b] for k, v in s.items()}, viewmats=vm[b], Ks=K[b], width=32, height=32)
        torch.testing.assert_close(out.rgb[b], one.rgb + (1 - one.alpha) * bg[b, :, None, None], atol=1e-6, rtol=0)
        torch.testing.assert_close(out.alpha[b], one.alpha, atol=1e-6, rtol=0)
        assert (one.alpha > 0.1).any()


def test_sh_view_dependence():
    "Degree-1 SH: the colour follows the viewing direction; from opposite sides the odd band flips sign."
    coeffs = torch.zeros(1, 4, 3); coeffs[0, 3, 0] = 0.8  # the x band, red channel
    base = dict(means=torch.zeros(1, 3), quats=torch.tensor([[1.0, 0, 0, 0]]), scales=torch.full((1, 3), 0.2),
                opacities=torch.tensor([0.99]), colors=coeffs)
    K = torch.tensor([[40.0, 0, 8], [0, 40.0, 8], [0, 0, 1]])[None]
    def from_eye(ex):
        from avatar_nb.localise import look_at
        return render(**base, viewmats=look_at(torch.tensor([ex, 0.0, 0.0]), torch.zeros(3))[None], Ks=K,
                      width=16, height=16).rgb[0, 8, 8, 0] / render(**base, viewmats=look_at(torch.tensor([ex, 0.0, 0.0]), torch.zeros(3))[None],
                                                                   Ks=K, width=16, height=16).alpha[0, 8, 8, 0]
    c_pos, c_neg = from_eye(2.0), from_eye(-2.0)
    d = sh_basis(1, torch.tensor([[-1.0, 0, 0]]))[0, 3] * 0.8  # seen from +x the direction to the Gaussian is -x
    torch.testing.assert_close(c_pos, 0.5 + d, atol=1e-5, rtol=0)
    torch.testing.assert_close(c_neg, 0.5 - d, atol=1e-5, rtol=0)


def test_missing_gsplat_and_cuda_are_explained(monkeypatch):
    import sys
    from avatar_nb.render import RenderError, _gsplat
    monkeypatch.setitem(sys.modules, "gsplat", None)  # import gsplat now raises ImportError
    with pytest.raises(RenderError, match="pip install gsplat"):
        _gsplat()
    one = dict(means=torch.tensor([[0.0, 0, 2]]), quats=torch.tensor([[1.0, 0, 0, 0]]), scales=torch.full((1, 3), 0.1),
               opacities=torch.tensor([0.5]), colors=torch.ones(1, 3), viewmats=torch.eye(4)[None],
               Ks=torch.tensor([[20.0, 0, 8], [0, 20.0, 8], [0, 0, 1]])[None], width=16, height=16)
    if not torch.cuda.is_available():
        with pytest.raises(RenderError, match="needs CUDA"):
            render(**one, backend="gsplat")
    with pytest.raises(RenderError, match="backend must be"):
        render(**one, backend="opengl")
