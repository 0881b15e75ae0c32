"""``solov2 data stats/show``: the statistics are what training sees (same geometry as the real
transform + collate, same target assignment), hand-made collision / cap cases, the CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _paths import SHARED
from pycocotools import mask as mask_utils

from solov2.cli import main
from solov2.data.coco import CocoInstances, DataWarning
from solov2.data.loader import collate
from solov2.data.rle import column_segments as _segments
from solov2.data.rle import resized_geometry as _geometry
from solov2.data.rle import rle_counts
from solov2.data.show import summary_figure
from solov2.data.stats import dataset_stats
from solov2.data.synthetic import make_synthetic_coco
from solov2.data.transforms import build_transforms, rescale_size
from solov2.ops.masks import center_of_mass
from solov2.presets import get_config
from solov2.targets import GridGeometry, assign_cells

BBBC = SHARED / "datasets" / "bbbc039"


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("stats") / "data"
    make_synthetic_coco(root, num_images=(6, 2), image_size=(90, 130), max_objects=8, seed=3)
    return root


def _datasets(synth: Path) -> list[CocoInstances]:
    out = [
        CocoInstances(synth / "annotations" / "instances_train.json", synth / "train", train=True)
    ]
    if BBBC.is_dir():
        out.append(
            CocoInstances(BBBC / "annotations" / "instances_train.json", BBBC / "train", train=True)
        )
    return out


def test_rle_counts_match_pycocotools() -> None:
    g = torch.Generator().manual_seed(0)
    masks = (torch.rand(5, 37, 23, generator=g) > 0.6).numpy().astype(np.uint8)
    masks[0] = 0
    masks[1] = 1  # a full mask, a long run
    masks[2, :, :] = 0
    masks[2, 30:, 20:] = 1  # runs near the end
    for m in masks:
        rle = mask_utils.encode(np.asfortranarray(m))
        c = rle_counts(rle)
        flat = np.repeat(np.arange(c.size) % 2, c).astype(np.uint8)
        assert c.sum() == m.size and np.array_equal(flat.reshape(23, 37).T, m)


@pytest.mark.parametrize("scale", [[1333, 800], [240, 192], [97, 61]])
def test_geometry_is_the_training_pipelines(synth: Path, scale: list[int]) -> None:
    """Boxes and centres of mass in the padded training frame, from the RLE runs, equal the
    real transform (nearest mask resize) + collate + center_of_mass, up- and downscaling."""
    for ds in _datasets(synth):
        ds.transform = build_transforms(True, [scale], flip_prob=0.0)
        for i in (0, 1, len(ds) - 1):
            rles, _, (h, w) = ds.annotation_rles(i)
            if not rles:
                continue
            area, sums, boxes = _geometry(
                _segments(rles, h), len(rles), (h, w), rescale_size(h, w, scale)
            )
            batch = collate([ds[i]])
            t = batch.targets[0]
            keep = area > 0  # the transform drops masks that the resize empties
            assert int(keep.sum()) == len(t)
            den = torch.from_numpy(area[keep]).float()
            for j, ref in enumerate(center_of_mass(t.masks)):
                ours = torch.from_numpy(sums[keep, j]).float() / den
                # identical while float32 sums are exact (< 2^24); beyond, training's own
                # float32 accumulation rounds (ours is the exact sum)
                exact = torch.from_numpy(sums[keep, j] < 2**24)
                assert torch.equal(ours[exact], ref[exact])
                torch.testing.assert_close(ours, ref, rtol=1e-6, atol=0)
            assert torch.equal(torch.from_numpy(boxes[keep]).float(), t.boxes)


def test_levels_match_the_assignment_on_full_masks(synth: Path) -> None:
    """Per-level counts equal an independent count from assign_cells on the real padded masks."""
    cfg = get_config("solov2_demo")
    cfg.data.train_scales = [[240, 192], [160, 128]]
    cfg.model.head.num_grids = [4, 4, 3, 3, 2]  # coarse: collisions happen
    ds = _datasets(synth)[0]
    st = dataset_stats(ds, cfg)
    head = cfg.model.head
    hit = np.zeros(5)
    lose_all = np.zeros(5)
    for scale in cfg.data.train_scales:
        ds.transform = build_transforms(True, [scale], flip_prob=0.0)
        for i in range(len(ds)):
            t = collate([ds[i]]).targets[0]
            if not len(t):
                continue
            cx, cy = center_of_mass(t.masks)
            a = assign_cells(
                t.boxes,
                cx,
                cy,
                t.masks.flatten(1).any(1),
                torch.zeros(len(t), dtype=torch.long),
                1,
                GridGeometry(
                    tuple(t.masks.shape[-2:]), head.num_grids, head.scale_ranges, head.sigma
                ),
            )
            for lv in range(5):
                for m in torch.nonzero(a.hit[lv]).flatten().tolist():
                    hit[lv] += 1
                    cells = a.pos_cell[(a.pos_level == lv) & (a.pos_inst == m)]
                    lose_all[lv] += bool((a.winner[cells] != m).all())
    assert [lv.instances for lv in st.levels] == (hit / 2).tolist()
    assert [lv.lose_all for lv in st.levels] == (lose_all / 2).tolist()
    assert lose_all.sum() > 0  # the case is exercised
    assert (
        sum(st.instances_per_image)
        == st.instances
        == sum(len(ds.annotation_rles(i)[0]) for i in range(len(ds)))
    )


def _write_coco(
    root: Path, boxes: list[list[tuple[int, int, int, int]]], size: tuple[int, int] = (64, 64)
) -> Path:
    """Images with square masks ``(x, y, w, h)``; returns the data root (split ``train``)."""
    from PIL import Image

    (root / "annotations").mkdir(parents=True)
    (root / "train").mkdir()
    images, anns = [], []
    for i, objs in enumerate(boxes):
        Image.new("RGB", (size[1], size[0])).save(root / "train" / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": size[0], "width": size[1]})
        for x, y, w, h in objs:
            poly = [x, y, x + w, y, x + w, y + h, x, y + h]
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": 1,
                    "segmentation": [poly],
                    "area": w * h,
                    "bbox": [x, y, w, h],
                    "iscrowd": 0,
                }
            )
    (root / "annotations" / "instances_train.json").write_text(
        json.dumps(
            {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "blob"}]}
        )
    )
    return root


def test_known_collisions_caps_and_unassigned(tmp_path: Path) -> None:
    """64x64 images at scale 64 (no resize), grid 4 (16 px cells), one level 1-20 px:
    two 6-px squares in one cell (the first loses its only cell), one far away, one 30-px
    square (fits no level); image 2 holds 1 square. max_per_img 2: image 1 exceeds it by 2."""
    root = _write_coco(
        tmp_path / "d",
        [[(1, 1, 6, 6), (8, 2, 6, 6), (40, 40, 6, 6), (20, 30, 30, 30)], [(30, 30, 8, 8)]],
    )
    cfg = get_config("solov2_demo")
    cfg.data.train_scales = [[64, 64]]
    cfg.model.head.num_grids, cfg.model.head.strides = [4], [8]
    cfg.model.head.scale_ranges = [[1, 20]]
    cfg.model.test.max_per_img = 2
    ds = CocoInstances(root / "annotations" / "instances_train.json", root / "train", train=True)
    st = dataset_stats(ds, cfg)
    (lv,) = st.levels
    assert st.instances == 5 and st.per_image == {"mean": 2.5, "median": 2.5, "max": 4, "min": 1}
    assert lv.instances == 4 and lv.lose_all == 1 and lv.lose_all_share == 0.25
    assert lv.cell_px == [16.0, 16.0] and lv.cells_per_instance == 1.0
    assert st.unassigned == {"total": 1, "too_small": 0, "too_large": 1, "between": 0}
    assert st.images_over_max == 1 and st.instances_over_max == 2
    assert st.size_px["max"] == 30 and st.coco_areas["small"] == 1.0
    text = "\n".join(st.warnings)
    assert "25% of the instances at level 0 (grid 4, 1-20 px) lose all their grid cells" in text
    assert "20.0% of the instances fit no level (0 smaller than 1 px, 1 larger than 20 px" in text
    assert "images hold up to 4 instances but model.test.max_per_img is 2" in text
    # larger grids resolve the collision and the warning goes
    cfg.model.head.num_grids = [16]
    assert dataset_stats(ds, cfg).levels[0].lose_all == 0


def test_cli_stats_and_show(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _write_coco(tmp_path / "d", [[(1, 1, 6, 6), (8, 2, 6, 6)], [(30, 30, 8, 8)]])
    base = [
        "--config",
        "solov2_demo",
        "--data-root",
        str(root),
        "--split",
        "train",
        "data.train_scales=[[64,64]]",
        "model.head.num_grids=[4,4,4,4,4]",
    ]
    out = tmp_path / "s.json"
    assert main(["data", "stats", *base, "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "instances per image: mean 1.5, median 1.5, max 2, min 1" in text
    header = next(ln for ln in text.splitlines() if ln.lstrip().startswith("level"))
    assert "instances " in header and "*" not in text  # one scale: counts, not means
    assert "skipped images: none" in text
    assert "lose all their grid cells" in text
    d = json.loads(out.read_text())
    assert d["instances"] == 3 and d["levels"][0]["lose_all"] == 1
    assert main(["data", "show", *base, "--output-dir", str(tmp_path / "vis")]) == 0
    assert sorted(p.name for p in (tmp_path / "vis").iterdir()) == ["0.png", "1.png", "labels.png"]
    from PIL import Image

    drawn = np.asarray(Image.open(tmp_path / "vis" / "0.png"))
    assert drawn.shape == (64, 64, 3) and drawn[3, 3].any() and not drawn[60, 2].any()
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # the plot extra missing
    assert main(["data", "show", *base, "--output-dir", str(tmp_path / "v2")]) == 0
    assert "labels.png skipped: matplotlib is not installed" in capsys.readouterr().out
    assert not (tmp_path / "v2" / "labels.png").exists()
    # a user's mistake: one line, exit 2
    assert main(["data", "stats", "--data-root", str(tmp_path / "nope"), "--split", "x"]) == 2
    assert "annotation file not found" in capsys.readouterr().err


def test_cli_stats_names_skipped_images_and_marks_averaged_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Five images without objects (data.filter_empty) and one whose file is missing: the
    first three named, then how many more. Two training scales: the columns that are means
    over the scales say so."""
    root = _write_coco(tmp_path / "d", [[(1, 1, 6, 6)], [], [], [], [], [], [(30, 30, 8, 8)]])
    (root / "train" / "6.png").unlink()
    argv = ["data", "stats", "--config", "solov2_demo", "--data-root", str(root)]
    argv += ["--split", "train", "data.filter_empty=true", "data.train_scales=[[64,64],[48,48]]"]
    with pytest.warns(DataWarning, match="6.png not found"):
        assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == (
        "skipped images: 6 (image 2 '1.png': no annotations (data.filter_empty); image 3 "
        "'2.png': no annotations (data.filter_empty); image 4 '3.png': no annotations "
        "(data.filter_empty); and 3 more)"
    )
    header = next(ln for ln in lines if ln.lstrip().startswith("level")).split()
    assert {"instances*", "all*", "some*"} <= set(header)
    assert any(ln.startswith("* mean over the 2 training scales") for ln in lines)
    assert any(ln.startswith("in no level*: ") and "resize*: " in ln for ln in lines)


def test_summary_figure_keeps_every_title_inside(tmp_path: Path) -> None:
    """A deep annotation path and six training scales: every text of labels.png lies inside
    the figure (the titles used to run off its edge)."""
    pytest.importorskip("matplotlib")
    root = _write_coco(tmp_path / "d", [[(1, 1, 6, 6), (8, 2, 6, 6)], [(30, 30, 8, 8)]])
    ds = CocoInstances(root / "annotations" / "instances_train.json", root / "train", train=True)
    cfg = get_config("solov2_light_mnv2_448")  # 768x(352-512): six scales
    st = dataset_stats(ds, cfg)
    st.source = "/" + "/".join(f"folder_{k}" for k in range(20)) + "/instances_train.json"
    fig = summary_figure(st)
    try:
        fig.canvas.draw()
        renderer, box = fig.canvas.get_renderer(), fig.bbox
        parts = [fig._suptitle] + [
            t for a in fig.axes for t in (a.title, a.xaxis.label, a.yaxis.label)
        ]  # the titles and axis labels (tick labels outside the view are never drawn)
        texts = [t for t in parts if t is not None and t.get_text()]
        assert any("768x(352-512)" in t.get_text() for t in texts)
        for t in texts:
            e = t.get_window_extent(renderer)
            inside = e.x0 >= box.x0 - 1 and e.x1 <= box.x1 + 1 and e.y0 >= box.y0 - 1
            assert inside and e.y1 <= box.y1 + 1, t.get_text()
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
