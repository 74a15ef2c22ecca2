"GPU: chunked blending against float64 compositing and gsplat's blending (skipped where CUDA or gsplat is absent)."
import importlib.util

import pytest
import torch

from avatar_nb.blend import chunked_back
from avatar_nb.localise import intrinsics, look_at
from avatar_nb.rasterize import _composite
from avatar_nb.render import RenderError, gsplat_back, gsplat_front

pytestmark = pytest.mark.skipif(not torch.cuda.is_available() or importlib.util.find_spec("gsplat") is None,
                                reason="needs a CUDA device and the gsplat package")


def front_of(B, n, W, H, seed, max_opacity=1.0, z=3.0):
    "gsplat's projection of B fresh random scenes of n Gaussians."
    g = torch.Generator(device="cuda").manual_seed(seed)
    r = lambda *s: torch.rand(*s, generator=g, device="cuda")
    means = (r(B, n, 3) - 0.5) * torch.tensor([0.6, 1.0, 0.4], device="cuda") + torch.tensor([0.0, 0.0, z], device="cuda")
    K = intrinsics(W, H, 40.0 if W >= 100 else 12.0).cuda()[None].expand(B, 3, 3).contiguous()
    return gsplat_front(means, r(B, n, 4) - 0.5, r(B, n, 3) * 0.02 + 0.002, r(B, n) * max_opacity,
                        (r(B, n, 16, 3) - 0.5) * 0.6, K, W, H)


def exact(front, W, H, bg):
    "The torch rasterizer's compositing in float64 with every Gaussian blended: rgb [B, 1, H, W, 3], alpha [B, 1, H, W, 1]."
    radii, m2, depths, conics, rgb, op = (t[:, 0].double() for t in front)
    c, a = _composite(m2, conics, depths, op, rgb, radii, (radii > 0).all(-1), W, H, 8, 2**26, t_eps=0.0)
    if bg is not None: c = c + (1 - a[..., None]) * bg.double()[:, None, None]
    return c[:, None], a[:, None, ..., None]


@pytest.mark.parametrize("B,n,W,H,tile,seed", [(2, 3000, 61, 45, 8, 0), (3, 2000, 40, 52, 16, 1), (1, 4000, 64, 64, 8, 2)])
@pytest.mark.parametrize("with_bg", [False, True])
def test_chunks_are_alpha_compositing(B, n, W, H, tile, seed, with_bg):
    front = front_of(B, n, W, H, seed)
    bg = torch.rand(B, 3, device="cuda") if with_bg else None
    rgb, alpha = chunked_back(front, W, H, bg, tile_size=tile, stop=0.0)
    ref_rgb, ref_alpha = exact(front, W, H, bg)
    assert rgb.shape == (B, 1, H, W, 3) and alpha.shape == (B, 1, H, W, 1)
    assert (rgb - ref_rgb).abs().max() < 1e-5 and (alpha - ref_alpha).abs().max() < 1e-5
    assert ref_alpha.max() > 0.99  # the scenes cover pixels fully, so chunks are composited over one another


def test_chunks_match_gsplat_blending_up_to_its_stopping_rule():
    front = front_of(1, 60_000, 512, 512, 3, max_opacity=0.9)  # long lists: 512 x 512, many Gaussians per tile
    bg = torch.ones(1, 3, device="cuda")
    rgb, alpha = chunked_back(front, 512, 512, bg)
    ref_rgb, ref_alpha = gsplat_back(front, 512, 512, bg)
    # gsplat leaves out the Gaussian that would leave <= 1e-4 of the light: with alpha <= 0.9, only where <= 1e-3 is left
    assert (rgb - ref_rgb).abs().max() < 3e-3 and (alpha - ref_alpha).abs().max() < 3e-3
    assert (rgb - ref_rgb).abs().mean() < 1e-5


def test_stop_bounds_the_difference():
    front = front_of(2, 20_000, 203, 151, 4)
    bg = torch.rand(2, 3, device="cuda")
    full, _ = chunked_back(front, 203, 151, bg, stop=0.0)
    for stop in (1e-3, 5e-2):
        early, _ = chunked_back(front, 203, 151, bg, stop=stop)
        bound = stop * max(float(front[4].abs().max()), float(bg.max()))
        assert 0 < (early - full).abs().max() <= bound + 1e-6


def test_nothing_in_view_gives_the_background():
    front = front_of(2, 500, 64, 48, 5, z=-3.0)  # all behind the camera
    bg = torch.rand(2, 3, device="cuda")
    rgb, alpha = chunked_back(front, 64, 48, bg)
    assert (rgb == bg[:, None, None, None]).all() and (alpha == 0).all()


def test_bad_settings_are_refused():
    front = front_of(1, 100, 32, 32, 6)
    with pytest.raises(RenderError, match="tile_size must be 8 or 16"): chunked_back(front, 32, 32, tile_size=12)
    with pytest.raises(RenderError, match="stop must be a share of light"): chunked_back(front, 32, 32, stop=1.0)


def test_player_blends_and_compiles_alike():
    from avatar_nb.avatar import tiny_avatar
    from avatar_nb.player import AvatarPlayer
    a = tiny_avatar()
    v = torch.from_numpy(a.vertices[:1]).cuda()
    E = look_at(torch.tensor([0.0, 0.9, 3.0]), torch.tensor([0.0, 0.85, 0.0])).cuda()[None]
    K, bg = intrinsics(96, 96, 40.0).cuda()[None], torch.ones(3, device="cuda")
    chunks, gs = (AvatarPlayer(a, "cuda", blend=b).render(v, E, K, 96, 96, bg, depth=False) for b in ("chunks", "gsplat"))
    assert (chunks.alpha > 0.5).any() and (chunks.rgb - gs.rgb).abs().max() < 2e-3
    plain, compiled = AvatarPlayer(a, "cuda", graph=False), AvatarPlayer(a, "cuda", graph=False, compile=True)
    g0, g1 = plain.place(v, E), compiled.place(v, E)
    for k in ("means", "quats", "scales", "opacities", "sh"):
        torch.testing.assert_close(getattr(g1, k), getattr(g0, k), atol=1e-5, rtol=1e-5)
