"""The photometric training augmentation (``data.invert_prob``, ``data.color_jitter``)."""

from __future__ import annotations

import pytest
import torch
from _paths import SHARED
from test_compact import _assert_same_batches, _pair

from solov2.config import ConfigError, DataCfg, apply_overrides
from solov2.data.loader import SeededItems, dataset_from_config
from solov2.data.transforms import photometric_steps
from solov2.presets import get_config

BBBC = SHARED / "datasets" / "bbbc039"
needs_bbbc = pytest.mark.skipif(not BBBC.is_dir(), reason="no bbbc039")


def test_off_by_default_everywhere() -> None:
    """No preset augments photometrically: the reference pipeline (and its random draws) stays."""
    for name in ("solov2_r50_fpn_1x", "solov2_light_mnv2_448", "solov2_light_mnv2_dense"):
        d = get_config(name).data
        assert d.invert_prob == 0.0 and d.color_jitter == [0.0, 0.0, 0.0, 0.0]


def test_zero_is_no_step() -> None:
    """Both at 0: no transform and no random draw is added to the reference pipeline."""
    assert photometric_steps(0.0, [0.0, 0.0, 0.0, 0.0]) == []
    assert [type(t).__name__ for t in photometric_steps(0.5, [0.1, 0, 0, 0])] == [
        "RandomInvert",
        "ColorJitter",
    ]


@needs_bbbc
@pytest.mark.parametrize("compact", [True, False])
def test_invert_prob_one_inverts_the_image_only(compact: bool) -> None:
    """invert_prob=1: every training image is 255 - image, targets untouched."""
    base = dict(
        data_root=str(BBBC), train_split="train", train_scales=[[300, 200]], compact_masks=compact
    )
    plain = SeededItems(dataset_from_config(DataCfg(**base), "train", True))
    inv = SeededItems(dataset_from_config(DataCfg(**base, invert_prob=1.0), "train", True))
    for key in [(0, 11), (5, 13)]:
        sp, si = plain[key], inv[key]
        ip, tp, ii, ti = sp.image, sp.instances, si.image, si.instances
        assert torch.equal(ii, 255 - ip)
        assert torch.equal(tp.labels, ti.labels) and torch.equal(tp.boxes, ti.boxes)
        dp = tp.masks.to_dense() if compact else tp.masks
        di = ti.masks.to_dense() if compact else ti.masks
        assert torch.equal(dp, di)


@needs_bbbc
def test_compact_and_dense_pipelines_draw_the_same_augmentation() -> None:
    """Random inversion and colour jitter drawn in the same order by both pipelines (after the
    scale and the flip): same batches and targets, and the images really changed."""
    kw = dict(invert_prob=0.5, color_jitter=[0.4, 0.4, 0.4, 0.1])
    compact, dense = _pair(BBBC, [[400, 300], [300, 200]], **kw)
    keys = [[(i, 5 + i), (i + 7, 9 + i)] for i in (0, 40)]
    assert _assert_same_batches(compact, dense, keys) > 200
    plain, _ = _pair(BBBC, [[400, 300], [300, 200]])
    assert not torch.equal(compact[(0, 5)].image, plain[(0, 5)].image)


@pytest.mark.parametrize(
    "item",
    ["data.invert_prob=1.5", "data.color_jitter=[0.1,0.1]", "data.color_jitter=[0,0,0,0.7]"],
)
def test_bad_values_are_one_line_naming_the_field(item: str) -> None:
    with pytest.raises(ConfigError, match=item.split("=")[0].replace(".", r"\.") + "="):
        apply_overrides(get_config("solov2_light_mnv2_dense"), [item])
