"""Pure-PyTorch, differentiable 3D Gaussian splatting (the reference backend).

Three small functions, each one job:

* :func:`project_gaussians` -- EWA projection of 3D Gaussians to screen-space conics, with the
  mip-splatting 2D low-pass filter (``kernel_size`` added to the 2D covariance diagonal, opacity
  scaled by ``sqrt(det(S) / det(S + k I))``), the behaviour of TRELLIS's rasteriser.
* :func:`rasterize_tiles` -- the fast path: depth sort, bin Gaussians into square tiles by the
  exact bounding box of the region where they can pass the alpha threshold, then front-to-back
  alpha compositing of all (tile, Gaussian, pixel) triples of a batch of tiles at once.
* :func:`rasterize_brute_force` -- the oracle: every projectable Gaussian at every pixel, one
  Gaussian at a time, written as literally as the per-pixel loop of a CUDA rasteriser.

Compositing semantics (shared by both, as in the 3DGS / mip-splatting CUDA kernels):
``alpha = min(0.99, o * exp(-0.5 d^T S^-1 d))``; a Gaussian with ``alpha < 1/255`` is skipped;
a Gaussian whose inclusion would bring the transmittance below ``1e-4`` is not included and ends
the pixel (early stop); ``color = sum_i c_i alpha_i T_i + T_final * background``.

Because the tile bounding box contains every pixel where a Gaussian could reach the alpha
threshold, :func:`rasterize_tiles` equals :func:`rasterize_brute_force` up to float rounding
(tested), unlike the 3-sigma square boxes of the original CUDA code.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

import torch
from torch.utils.checkpoint import checkpoint

from ..representations.gaussian import quaternion_to_matrix
from .camera import Camera

__all__ = [
    "ProjectedGaussians",
    "project_gaussians",
    "rasterize_tiles",
    "rasterize_brute_force",
    "ALPHA_MIN",
    "ALPHA_MAX",
    "TRANSMITTANCE_MIN",
    "MIN_DEPTH",
    "TILE_SIZE",
]

#: Smallest alpha that contributes (one 8-bit level).
ALPHA_MIN = 1.0 / 255.0
#: Alpha clamp (keeps 1 - alpha away from 0, so transmittance never becomes exactly 0).
ALPHA_MAX = 0.99
#: Transmittance below which a pixel stops accumulating.
TRANSMITTANCE_MIN = 1e-4
#: Gaussians whose camera depth is at or below this are culled (3DGS's near cull).
MIN_DEPTH = 0.2
#: Tile edge in pixels.
TILE_SIZE = 16
#: Mip-splatting 2D filter variance in pixels^2 (TRELLIS's renderer default).
DEFAULT_KERNEL_SIZE = 0.1
#: The Jacobian of the projection is evaluated at the mean clamped to the view frustum widened
#: by this fraction of the half field of view on each side (as 3DGS and gsplat do), so
#: off-screen Gaussians do not get huge screen-space footprints.
JACOBIAN_CLAMP_MARGIN = 0.3
#: Floor of det(S) / det(S + kI) in the mip-filter opacity factor (keeps sqrt differentiable
#: for degenerate, flat Gaussians).
MIN_DET_RATIO = 1e-12
#: Pixels added to each tile bounding box so float rounding of the box never drops a pixel
#: that passes the alpha threshold (extra pairs are harmless: they are tested per pixel).
BBOX_MARGIN_PX = 1e-2
#: Alpha floor when normalising accumulated depth (expected depth is 0 where nothing is drawn).
DEPTH_ALPHA_FLOOR = 1e-10
#: Number of (tile, Gaussian, pixel) elements processed per batch in :func:`rasterize_tiles`.
DEFAULT_CHUNK_ELEMENTS = 1 << 22
#: Gaussians per tile composited per step of :func:`rasterize_tiles` (tiles whose pixels have
#: all stopped leave after each step).
GAUSSIANS_PER_STEP = 64


@dataclass
class ProjectedGaussians:
    """Screen-space Gaussians (N = number of inputs; rows of culled Gaussians are junk).

    Attributes:
        means2d: [N, 2] centres in pixel coordinates (pixel i's centre at i + 0.5).
        conics: [N, 3] (A, B, C) of the inverse filtered 2D covariance; the Gaussian falls off as
            ``exp(-0.5 (A dx^2 + C dy^2) - B dx dy)``.
        opacities: [N] opacities times the mip-filter factor.
        depths: [N] camera z.
        extents: [N, 2] half-widths (pixels) of the box outside of which alpha < ALPHA_MIN
            (no gradient).
        valid: [N] bool, projectable (depth > min_depth, positive-definite 2D covariance).
        visible: [N] bool, valid and able to reach ALPHA_MIN at some pixel of the image.
    """

    means2d: torch.Tensor
    conics: torch.Tensor
    opacities: torch.Tensor
    depths: torch.Tensor
    extents: torch.Tensor
    valid: torch.Tensor
    visible: torch.Tensor


def project_gaussians(
    means: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    opacities: torch.Tensor,
    camera: Camera,
    kernel_size: float = DEFAULT_KERNEL_SIZE,
    min_depth: float = MIN_DEPTH,
) -> ProjectedGaussians:
    """EWA-project 3D Gaussians through a pinhole camera.

    Args:
        means: [N, 3] world centres.
        quats: [N, 4] orientations (w, x, y, z), normalised here.
        scales: [N, 3] per-axis standard deviations (world units).
        opacities: [N] or [N, 1] in [0, 1].
        camera: the :class:`Camera` (OpenCV extrinsics, normalised intrinsics).
        kernel_size: mip-splatting 2D filter variance in pixels^2 (TRELLIS: 0.1); 0 disables it.
        min_depth: cull Gaussians at camera z <= this.

    The 2D covariance is ``S = J W Sigma W^T J^T`` with W the camera rotation and J the Jacobian
    of ``(x, y, z) -> (fx x / z, fy y / z)`` at the (frustum-clamped) camera-space mean.
    """
    dtype = means.dtype
    extr = camera.extrinsics.to(device=means.device, dtype=dtype)
    k_pix = camera.pixel_intrinsics().to(device=means.device, dtype=dtype)
    fx, fy, cx, cy = k_pix[0, 0], k_pix[1, 1], k_pix[0, 2], k_pix[1, 2]
    rot_w2c = extr[:3, :3]

    p_cam = means @ rot_w2c.T + extr[:3, 3]
    x, y, z = p_cam.unbind(-1)
    valid = z > min_depth
    z_safe = torch.where(valid, z, torch.ones_like(z))
    means2d = torch.stack([fx * x / z_safe + cx, fy * y / z_safe + cy], dim=-1)

    # Jacobian at the mean, tangents clamped to the widened frustum.
    half_tan_x, half_tan_y = 0.5 * camera.width / fx, 0.5 * camera.height / fy
    tx = torch.minimum(torch.maximum(x / z_safe, -cx / fx - JACOBIAN_CLAMP_MARGIN * half_tan_x),
                       (camera.width - cx) / fx + JACOBIAN_CLAMP_MARGIN * half_tan_x)
    ty = torch.minimum(torch.maximum(y / z_safe, -cy / fy - JACOBIAN_CLAMP_MARGIN * half_tan_y),
                       (camera.height - cy) / fy + JACOBIAN_CLAMP_MARGIN * half_tan_y)
    zeros = torch.zeros_like(z_safe)
    jac = torch.stack([
        torch.stack([fx / z_safe, zeros, -fx * tx / z_safe], dim=-1),
        torch.stack([zeros, fy / z_safe, -fy * ty / z_safe], dim=-1),
    ], dim=-2)                                                            # [N, 2, 3]

    # S = (J W R diag(s)) (J W R diag(s))^T
    half = (jac @ rot_w2c) @ quaternion_to_matrix(quats) * scales[:, None, :]  # [N, 2, 3]
    cov = half @ half.transpose(-1, -2)                                   # [N, 2, 2]
    a, b, c = cov[:, 0, 0], cov[:, 0, 1], cov[:, 1, 1]
    det_raw = a * c - b * b
    a_f, c_f = a + kernel_size, c + kernel_size
    det = a_f * c_f - b * b
    valid = valid & (det > 0) & torch.isfinite(det) & torch.isfinite(means2d).all(-1)
    det_safe = torch.where(valid, det, torch.ones_like(det))
    conics = torch.stack([c_f / det_safe, -b / det_safe, a_f / det_safe], dim=-1)

    opac = opacities.reshape(-1).to(dtype)
    if kernel_size > 0:
        opac = opac * torch.sqrt((det_raw / det_safe).clamp_min(MIN_DET_RATIO))

    with torch.no_grad():
        log_ratio = torch.log(opac.detach().clamp_min(torch.finfo(dtype).tiny) / ALPHA_MIN)
        reach = torch.sqrt(2 * log_ratio.clamp_min(0))                    # Mahalanobis radius
        extents = torch.stack([reach * a_f.detach().clamp_min(0).sqrt(),
                               reach * c_f.detach().clamp_min(0).sqrt()], dim=-1) + BBOX_MARGIN_PX
        lo = means2d.detach() - extents
        hi = means2d.detach() + extents
        size = torch.tensor([camera.width, camera.height], dtype=dtype, device=means.device)
        on_screen = ((hi >= 0.5 - BBOX_MARGIN_PX) & (lo <= size - 0.5 + BBOX_MARGIN_PX)).all(-1)
        visible = valid & (log_ratio >= 0) & on_screen
    return ProjectedGaussians(means2d, conics, opac, z, extents, valid, visible)


def _composite(px, py, gauss, t_all, t_kept):
    """Front-to-back compositing of K depth-sorted Gaussians over the S x S pixels of T tiles.

    Args:
        px: [T, 1, S] pixel-centre x of each tile column; py: [T, 1, S] y of each tile row.
        gauss: [T, K, 6 + F] per-Gaussian rows in depth order: mean x, mean y, -A/2, -B, -C/2,
            log(opacity), then F features (colours, depth). Padding rows have log(opacity) = -inf.
        t_all: [T, P] transmittance including Gaussians rejected by the early stop (decides it).
        t_kept: [T, P] transmittance of the composited Gaussians (P = S * S, row-major).
    Returns:
        (accumulated features [T, P, F], t_all [T, P], t_kept [T, P]).

    The exponent is separable up to the cross term, so it is assembled from [T, K, S] factors:
    ``power[y, x] = (-C/2 dy^2)[y] + (-A/2 dx^2 + log o)[x] + dy[y] * (-B dx)[x]``.
    """
    n_tiles, n_gauss = gauss.shape[:2]
    dx = px - gauss[..., 0:1]                                              # [T, K, S]
    dy = py - gauss[..., 1:2]
    ex = gauss[..., 2:3] * dx * dx + gauss[..., 5:6]
    ey = gauss[..., 4:5] * dy * dy
    cross = gauss[..., 3:4] * dx
    power = torch.addcmul(ey[..., :, None] + ex[..., None, :], dy[..., :, None], cross[..., None, :])
    alpha = torch.exp(power.reshape(n_tiles, n_gauss, -1)).clamp_max(ALPHA_MAX)   # [T, K, P]
    alpha = alpha * (alpha >= ALPHA_MIN)
    trans = t_all[:, None, :] * torch.cumprod(1 - alpha, dim=1)           # after each Gaussian
    keep = trans >= TRANSMITTANCE_MIN                                      # a prefix along K
    before = torch.cat([t_all[:, None, :], trans[:, :-1]], dim=1)
    weights = alpha * before * keep                                        # [T, K, P]
    acc = weights.transpose(1, 2) @ gauss[..., 6:]                         # [T, P, F]
    return acc, trans[:, -1], t_kept - weights.sum(dim=1)


def _sorted_visible(proj: ProjectedGaussians, mask: torch.Tensor) -> torch.Tensor:
    """Indices of ``mask`` Gaussians in increasing depth (stable: ties keep input order)."""
    idx = mask.nonzero().squeeze(1)
    return idx[torch.argsort(proj.depths.detach()[idx], stable=True)]


def _finish(acc: torch.Tensor, t_kept: torch.Tensor, background: torch.Tensor):
    """acc [..., C+1] (colours, depth), t_kept [...] -> rgb [..., C], alpha [...], depth [...]."""
    alpha = 1 - t_kept
    rgb = acc[..., :-1] + t_kept[..., None] * background
    depth = acc[..., -1] / alpha.clamp_min(DEPTH_ALPHA_FLOOR)
    return rgb, alpha, depth


def _bin_tiles(proj: ProjectedGaussians, order: torch.Tensor, width: int, height: int, tile_size: int):
    """(tile, Gaussian) pairs: every tile a Gaussian's threshold box overlaps.

    Returns ``(tiles [U], starts [U], counts [U], pair_rank [Q])``: the U non-empty tiles
    (row-major ids), and for tile u the depth ranks ``pair_rank[starts[u] : starts[u] + counts[u]]``
    of its Gaussians, front to back (rank r = ``order[r]``).
    """
    device = order.device
    n_vis = order.numel()
    tiles_x = math.ceil(width / tile_size)
    centre, ext = proj.means2d.detach()[order], proj.extents[order]
    # Pixels whose centre (i + 0.5) lies inside the box [centre - ext, centre + ext].
    pix_lo = torch.ceil(centre - ext - 0.5).long().clamp_min(0)
    pix_hi = torch.minimum(torch.floor(centre + ext - 0.5).long(),
                           torch.tensor([width - 1, height - 1], device=device))
    t_lo, t_hi = pix_lo // tile_size, pix_hi // tile_size                      # inclusive
    span = (t_hi - t_lo + 1).clamp_min(0)                                      # [V, 2]
    counts = span[:, 0] * span[:, 1]
    rank = torch.repeat_interleave(torch.arange(n_vis, device=device), counts)
    local = torch.arange(rank.numel(), device=device) - (torch.cumsum(counts, 0) - counts)[rank]
    tile_id = (t_lo[rank, 1] + local // span[rank, 0]) * tiles_x + t_lo[rank, 0] + local % span[rank, 0]
    key_order = torch.argsort(tile_id * n_vis + rank)        # by tile, then front to back
    tiles, per_tile = torch.unique_consecutive(tile_id[key_order], return_counts=True)
    return tiles, torch.cumsum(per_tile, 0) - per_tile, per_tile, rank[key_order]


def rasterize_tiles(
    proj: ProjectedGaussians,
    colors: torch.Tensor,
    width: int,
    height: int,
    background: torch.Tensor,
    tile_size: int = TILE_SIZE,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
    gaussians_per_step: int = GAUSSIANS_PER_STEP,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tile-based compositing (fast path).

    Args:
        proj: output of :func:`project_gaussians` for N Gaussians.
        colors: [N, C] per-Gaussian colours.
        background: [C] colour behind the Gaussians.
        tile_size: tile edge in pixels.
        chunk_elements: bound on (tiles x Gaussians x pixels) evaluated at once (memory knob).
        gaussians_per_step: Gaussians per tile composited per step; after each step, tiles whose
            every pixel has stopped (or that ran out of Gaussians) leave the batch.
    Returns:
        ``rgb [H, W, C]``, ``alpha [H, W]``, ``depth [H, W]`` (expected camera z of the
        composited Gaussians, ``sum w z / alpha``; 0 where nothing was drawn).

    Tiles are processed in batches of similar load. When gradients are needed every step is
    checkpointed (recomputed in backward), so memory stays at one step's intermediates.
    """
    device, dtype = colors.device, colors.dtype
    n_feat = colors.shape[1] + 1                                   # colours + depth
    tiles_x, tiles_y = math.ceil(width / tile_size), math.ceil(height / tile_size)
    n_pix = tile_size * tile_size
    order = _sorted_visible(proj, proj.visible)
    n_vis = order.numel()
    acc_img = torch.zeros(tiles_x * tiles_y, n_pix, n_feat, dtype=dtype, device=device)
    t_img = torch.ones(tiles_x * tiles_y, n_pix, dtype=dtype, device=device)

    if n_vis > 0:
        with torch.no_grad():
            tiles, starts, counts, pair_rank = _bin_tiles(proj, order, width, height, tile_size)
            by_load = torch.argsort(counts, descending=True, stable=True)
        # Depth-sorted Gaussian rows (see _composite) plus one transparent padding row at n_vis.
        conic = proj.conics[order]
        rows = torch.cat([
            proj.means2d[order], -0.5 * conic[:, 0:1], -conic[:, 1:2], -0.5 * conic[:, 2:3],
            torch.log(proj.opacities[order])[:, None], colors[order], proj.depths[order, None].to(dtype),
        ], dim=1)
        padding = torch.zeros(1, rows.shape[1], dtype=dtype, device=device)
        padding[0, 5] = -math.inf
        rows = torch.cat([rows, padding], dim=0)
        need_grad = torch.is_grad_enabled() and rows.requires_grad
        offsets = torch.arange(tile_size, device=device, dtype=dtype) + 0.5
        step = max(1, min(gaussians_per_step, chunk_elements // n_pix))
        batch = max(1, chunk_elements // (step * n_pix))

        done_tiles, done_acc, done_t = [], [], []
        for b0 in range(0, tiles.numel(), batch):
            # State of the tiles still compositing; finished tiles are moved to done_*.
            sel = by_load[b0:b0 + batch]
            b_tiles, b_starts, b_counts = tiles[sel], starts[sel], counts[sel]
            px = ((b_tiles % tiles_x) * tile_size).to(dtype)[:, None, None] + offsets
            py = ((b_tiles // tiles_x) * tile_size).to(dtype)[:, None, None] + offsets
            t_all = torch.ones(b_tiles.numel(), n_pix, dtype=dtype, device=device)
            t_kept = t_all
            acc = torch.zeros(b_tiles.numel(), n_pix, n_feat, dtype=dtype, device=device)
            k0 = 0
            while b_tiles.numel() > 0:
                slot = torch.arange(k0, k0 + step, device=device)
                pos = (b_starts[:, None] + slot[None, :]).clamp_max(pair_rank.numel() - 1)
                idx = torch.where(slot[None, :] < b_counts[:, None], pair_rank[pos], torch.full_like(pos, n_vis))
                args = (px, py, rows[idx], t_all, t_kept)
                if need_grad:
                    part, t_all, t_kept = checkpoint(_composite, *args, use_reentrant=False)
                else:
                    part, t_all, t_kept = _composite(*args)
                acc = acc + part
                k0 += step
                with torch.no_grad():
                    alive = (b_counts > k0) & (t_all >= TRANSMITTANCE_MIN).any(dim=1)
                if not bool(alive.all()):
                    finished = ~alive
                    done_tiles.append(b_tiles[finished])
                    done_acc.append(acc[finished])
                    done_t.append(t_kept[finished])
                    b_tiles, b_starts, b_counts = b_tiles[alive], b_starts[alive], b_counts[alive]
                    px, py, t_all, t_kept, acc = px[alive], py[alive], t_all[alive], t_kept[alive], acc[alive]
        tile_index = torch.cat(done_tiles)
        acc_img = acc_img.index_copy(0, tile_index, torch.cat(done_acc))
        t_img = t_img.index_copy(0, tile_index, torch.cat(done_t))

    rgb, alpha, depth = _finish(acc_img, t_img, background.to(dtype))

    def untile(x: torch.Tensor) -> torch.Tensor:  # [n_tiles, P, ...] -> [H, W, ...]
        rest = x.shape[2:]
        x = x.reshape(tiles_y, tiles_x, tile_size, tile_size, *rest)
        x = x.transpose(1, 2).reshape(tiles_y * tile_size, tiles_x * tile_size, *rest)
        return x[:height, :width]

    return untile(rgb), untile(alpha), untile(depth)


def rasterize_brute_force(
    proj: ProjectedGaussians,
    colors: torch.Tensor,
    width: int,
    height: int,
    background: torch.Tensor,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Oracle: every projectable Gaussian at every pixel, sequentially in depth order.

    No tiles, no bounding boxes, no opacity culling; a literal per-pixel front-to-back loop
    (vectorised over pixels only). Use for small tests. Same outputs as :func:`rasterize_tiles`.
    """
    device, dtype = colors.device, colors.dtype
    ys, xs = torch.meshgrid(torch.arange(height, device=device, dtype=dtype) + 0.5,
                            torch.arange(width, device=device, dtype=dtype) + 0.5, indexing="ij")
    px, py = xs.reshape(-1), ys.reshape(-1)
    feats = torch.cat([colors, proj.depths[:, None].to(dtype)], dim=1)
    trans = torch.ones_like(px)
    done = torch.zeros_like(px, dtype=torch.bool)
    acc = torch.zeros(px.numel(), feats.shape[1], dtype=dtype, device=device)
    for g in _sorted_visible(proj, proj.valid).tolist():
        dx, dy = px - proj.means2d[g, 0], py - proj.means2d[g, 1]
        a, b, c = proj.conics[g]
        power = -0.5 * (a * dx * dx + c * dy * dy) - b * dx * dy
        alpha = torch.clamp_max(proj.opacities[g] * torch.exp(power), ALPHA_MAX)
        contributes = (power <= 0) & (alpha >= ALPHA_MIN) & ~done
        next_trans = trans * (1 - alpha)
        stop = contributes & (next_trans < TRANSMITTANCE_MIN)
        done = done | stop
        use = contributes & ~stop
        acc = acc + torch.where(use, alpha * trans, torch.zeros_like(alpha))[:, None] * feats[g]
        trans = torch.where(use, next_trans, trans)
    rgb, alpha, depth = _finish(acc, trans, background.to(dtype))
    return rgb.reshape(height, width, -1), alpha.reshape(height, width), depth.reshape(height, width)
