"""Colour augmentation of the conditioning frames (ss4d.training.color_augment): one change per clip, black stays
black, reproducible from the keyed generator, off by default."""
import numpy as np
import pytest

from ss4d.training.color_augment import ColorConfig, apply_color, draw_color
from ss4d.training.errors import TrainingInputError


def frames():
    g = np.random.default_rng(0)
    x = np.zeros((3, 16, 16, 3), np.uint8)
    x[:, 4:12, 4:12] = g.integers(1, 256, (3, 8, 8, 3))
    return x


def test_off_by_default_and_the_change_is_one_per_clip():
    assert draw_color(ColorConfig(), np.random.default_rng(0)) is None
    cfg = ColorConfig(prob=1.0, permute_prob=1.0, saturation=(0.5, 0.5), brightness=(0.5, 0.5))
    change = draw_color(cfg, np.random.default_rng(3))
    x = frames()
    y = apply_color(x, change)
    assert (y[:, :4] == 0).all() and (y[:, :, :4] == 0).all()                  # the black background stays black
    rgb = x[..., list(change["order"])].astype(np.float64)
    grey = rgb.mean(-1, keepdims=True)
    want = np.clip(np.rint((grey + 0.5 * (rgb - grey)) * 0.5), 0, 255)
    np.testing.assert_array_equal(y, want.astype(np.uint8))                     # the same formula on every frame
    assert change == draw_color(cfg, np.random.default_rng(3))                  # reproducible from the generator


def test_brightness_and_grey_ranges():
    cfg = ColorConfig(prob=1.0, permute_prob=0.0, saturation=(0.0, 0.0), brightness=(0.2, 0.4))
    for seed in range(20):
        c = draw_color(cfg, np.random.default_rng(seed))
        assert c["order"] == (0, 1, 2) and c["saturation"] == 0.0 and 0.2 <= c["brightness"] <= 0.4
        y = apply_color(frames(), c)
        assert (y[..., 0] == y[..., 1]).all() and (y[..., 1] == y[..., 2]).all()   # grey
        assert y.max() <= np.ceil(255 * 0.4)


@pytest.mark.parametrize("bad", [{"prob": 2.0}, {"brightness": [1.0, 0.5]}, {"hue": 0.1}, {"saturation": [0.1]}])
def test_bad_configs_are_refused(bad):
    with pytest.raises(TrainingInputError):
        ColorConfig.from_dict(bad)


COLOR_ON = {"prob": 0.5, "permute_prob": 0.5}


def test_refused_where_the_target_carries_the_colours():
    """The SLat flow's target (the SLat) holds the object's colours and the change leaves it as it is: trained with
    it, a SLat flow learns to ignore the input's colours (the small model's SLat flows trained with it generated
    orange-grey for every input). The structure flow's target (occupancy) has no colour: allowed there."""
    from ss4d.training.config import TrainConfig

    phases = [{"frames": 2, "steps": 1, "batch_size": 1}]
    with pytest.raises(TrainingInputError, match="conditioning.color.*slat_flow"):
        TrainConfig({"stage": "slat_flow", "conditioning": {"color": COLOR_ON}, "progressive": phases})
    TrainConfig({"stage": "slat_flow", "conditioning": {"color": {"prob": 0.0}}, "progressive": phases})
    assert TrainConfig({"stage": "ss_flow", "conditioning": {"color": COLOR_ON},
                        "progressive": phases}).raw["conditioning"]["color"] == COLOR_ON
