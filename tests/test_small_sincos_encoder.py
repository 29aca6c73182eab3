"""The ``small-sincos`` condition encoder of the small model: a random DINOv2-class ViT whose position
embeddings are a fixed 2D sin-cos table, so its tokens say where a patch is (a random DINOv2's do not)."""
from __future__ import annotations

import math

import pytest
import torch

from ss4d.conditioning.dinov2 import SMALL_SINCOS, SMALL_SINCOS_BASE, load_dinov2
from ss4d.conditioning.resolve import load_condition_encoder
from trellis_ext.modules.embeddings import sincos_frequencies, sincos_grid_2d

GRID = 37
PREFIX = 1 + 4  # CLS + registers


def test_sincos_grid_values():
    side, c = 5, 8
    table = sincos_grid_2d(side, c, base=100.0)
    assert table.shape == (side * side, c)
    f = sincos_frequencies(c // 4, 100.0)
    r, col = 3, 1                                   # row-major: patch (3, 1) is row 3 * 5 + 1
    want = torch.cat([torch.sin(r * f), torch.cos(r * f), torch.sin(col * f), torch.cos(col * f)])
    torch.testing.assert_close(table[r * side + col], want)
    torch.testing.assert_close(table.norm(dim=-1), torch.full((side * side,), math.sqrt(c / 2)))
    for bad in (0, 6, -4):
        with pytest.raises(ValueError, match="multiple of 4"):
            sincos_grid_2d(side, bad)


@pytest.fixture(scope="module")
def enc():
    return load_dinov2("small-sincos")


def test_positions_are_the_table_and_seeded(enc):
    pos = enc.model.embeddings.position_embeddings[0].detach()
    assert enc.channels == SMALL_SINCOS["hidden_size"]
    assert torch.equal(pos[0], torch.zeros_like(pos[0]))        # CLS
    torch.testing.assert_close(pos[1:], sincos_grid_2d(GRID, enc.channels, SMALL_SINCOS_BASE))
    x = torch.rand(2, 3, 64, 64)
    assert torch.equal(load_dinov2("small-sincos").encode(x), enc.encode(x))


def _position_r2(tokens: torch.Tensor) -> float:
    """R² of the best linear map from patch tokens [1, 5 + 37², C] to the patches' (row, column)."""
    x = tokens[0, PREFIX:].double()
    x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    rows, cols = torch.meshgrid(torch.arange(GRID), torch.arange(GRID), indexing="ij")
    y = torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=1).double()
    fit = x @ torch.linalg.lstsq(x, y).solution
    return float(1 - ((y - fit) ** 2).sum() / ((y - y.mean(0)) ** 2).sum())


def test_blank_image_tokens_tell_where_a_patch_is(enc):
    """On a uniform image every patch has the same content, so only the position can tell tokens apart: with
    the sin-cos table a patch's row and column are linear functions of its token; with the random DINOv2
    (random position vectors of norm ~0.1 against ~5 of content) they are not."""
    blank = torch.zeros(1, 3, 518, 518)
    assert _position_r2(enc.encode(blank)) > 0.99
    assert _position_r2(load_dinov2("tiny-random").encode(blank)) < 0.2      # the weakness this encoder fixes


def test_folder_round_trip_gives_the_same_tokens(tmp_path, enc):
    enc.model.save_pretrained(str(tmp_path / "image_cond_model"))
    loaded, source = load_condition_encoder(tmp_path)
    x = torch.rand(1, 3, 96, 96)
    torch.testing.assert_close(loaded.encode(x), enc.encode(x))
    assert source.endswith("image_cond_model")
