"""``solov2 eval --results``: scoring predictions files (COCO results and ``solov2 infer``'s
``predictions.json``) against a tiny COCO dataset with known answers; ``--max-dets``; bad input."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_util
import pytest
from _errors import one_line_error

from solov2.cli import main
from solov2.data.coco import DataWarning

H, W = 40, 48
CATS = {3: "cat", 7: "dog"}  # non-contiguous ids
# image id -> (file_name, [(x0, y0, x1, y1, category_id)])
IMAGES: dict[int, tuple[str, list[tuple[int, int, int, int, int]]]] = {
    1: ("a.png", [(2, 2, 12, 12, 3), (20, 20, 34, 30, 7)]),
    2: ("sub/b.png", [(0, 0, 8, 8, 3), (30, 10, 46, 38, 3)]),
    5: ("c.png", [(5, 5, 25, 25, 7)]),  # stored as a polygon
    7: ("sub2/b.png", []),  # same basename as sub/b.png, no objects
    9: ("deep/er/d.png", [(10, 12, 30, 36, 3)]),
}
POLY_IMAGE = 5


def _rle(x0: int, y0: int, x1: int, y1: int, h: int = H, w: int = W) -> dict[str, Any]:
    m = np.zeros((h, w), dtype=np.uint8)
    m[y0:y1, x0:x1] = 1
    r = mask_util.encode(np.asfortranarray(m))
    r["counts"] = r["counts"].decode("ascii")
    return r


def _poly(x0: int, y0: int, x1: int, y1: int) -> list[list[float]]:
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def _write_dataset(root: Path, images: dict, h: int = H, w: int = W) -> None:
    (root / "annotations").mkdir(parents=True)
    anns = []
    for iid, (name, objs) in images.items():
        f = root / "val" / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.touch()  # never read: scoring needs the JSON sizes only
        for x0, y0, x1, y1, cid in objs:
            seg = _poly(x0, y0, x1, y1) if iid == POLY_IMAGE else _rle(x0, y0, x1, y1, h, w)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": iid,
                    "category_id": cid,
                    "segmentation": seg,
                    "iscrowd": 0,
                }
            )  # no bbox/area: the dataset fills
            # them for COCOeval (bbox AP needs GT boxes)
    data = {
        "images": [
            {"id": i, "file_name": n, "height": h, "width": w} for i, (n, _) in images.items()
        ],
        "categories": [{"id": c, "name": n} for c, n in CATS.items()],
        "annotations": anns,
    }
    (root / "annotations" / "instances_val.json").write_text(json.dumps(data))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    r = tmp_path_factory.mktemp("scores") / "data"
    _write_dataset(r, IMAGES)
    return r


def _gt_as_coco_results(skip: tuple[int, ...] = ()) -> list[dict[str, Any]]:
    out = []
    for iid, (_, objs) in IMAGES.items():
        for x0, y0, x1, y1, cid in objs:
            if iid not in skip:
                seg = _poly(x0, y0, x1, y1) if iid == POLY_IMAGE else _rle(x0, y0, x1, y1)
                out.append(
                    {
                        "image_id": iid,
                        "category_id": cid,
                        "segmentation": seg,
                        "score": 1.0 - 0.01 * len(out),
                    }
                )
    return out


def _eval(
    tmp_path: Path,
    root: Path,
    entries: Any,
    *extra: str,
    raw: str | None = None,
    name: str = "preds.json",
) -> tuple[int, Path]:
    f = tmp_path / name
    f.write_text(raw if raw is not None else json.dumps(entries))
    out = tmp_path / "out"
    code = main(
        [
            "eval",
            "--results",
            str(f),
            "--data-root",
            str(root),
            "--val-split",
            "val",
            "--output-dir",
            str(out),
            "--backend",
            "pycocotools",
            *extra,
        ]
    )
    return code, out


def _metrics(out: Path) -> dict[str, Any]:
    return json.loads((out / "metrics.json").read_text())


def test_coco_results_round_trip(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _eval(tmp_path, root, _gt_as_coco_results())
    assert code == 0
    m = _metrics(out)
    for task in ("segm", "bbox"):
        assert m[task]["AP"] == pytest.approx(100.0) and m[task]["AP75"] == pytest.approx(100.0)
    assert m["per_category"]["segm"] == pytest.approx({"cat": 100.0, "dog": 100.0})
    assert m["images"] == 5 and m["num_detections"] == 6 and m["skipped_entries"] == 0
    assert m["max_dets"] == 100  # the default config's model.test.max_per_img
    assert "task (max 100 dets)" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["log.txt", "metrics.json"]


def _as_infer_predictions(root: Path, tmp_path: Path) -> list[dict[str, Any]]:
    """GT in ``solov2 infer``'s format: file names as given on its command line, the dataset's
    category ids (3 and 7: the checkpoint stores them) and names."""
    names = {
        1: str(root / "val" / "a.png"),  # under the image folder
        2: "elsewhere/sub/b.png",  # trailing part sub/b.png
        5: str(tmp_path / "copy" / "c.png"),  # trailing part c.png
        9: "/somewhere/d.png",
    }  # unique basename
    return [
        {
            "file_name": names[r["image_id"]],
            "category_id": r["category_id"],
            "category_name": CATS[r["category_id"]],
            "score": r["score"],
            "bbox": [0.0, 0.0, 1.0, 1.0],  # ignored: the bbox AP uses the masks' boxes
            "segmentation": r["segmentation"],
        }
        for r in _gt_as_coco_results()
    ]


def test_infer_predictions_round_trip_and_skips(root: Path, tmp_path: Path) -> None:
    entries = _as_infer_predictions(root, tmp_path)
    extra = [
        dict(entries[0], file_name="/other/unknown.png"),
        dict(entries[0], file_name="clip.mp4", frame=3),
    ]
    with pytest.warns(
        DataWarning,
        match=r"2 of 8 entries are for images not in the dataset.*"
        r"e\.g\. entry 6 \(file_name '/other/unknown\.png'\)",
    ):
        code, out = _eval(tmp_path, root, entries + extra)
    assert code == 0
    m = _metrics(out)
    assert m["segm"]["AP"] == pytest.approx(100.0) and m["bbox"]["AP"] == pytest.approx(100.0)
    assert m["num_detections"] == 6 and m["skipped_entries"] == 2


def test_every_dataset_image_counts(root: Path, tmp_path: Path) -> None:
    """No predictions for image 5 (1 of the 2 dogs): dog recall stops at 0.5, so 51 of the 101
    recall points have precision 1 -> dog AP 50.50, cat AP 100, mean 75.25."""
    code, out = _eval(tmp_path, root, _gt_as_coco_results(skip=(POLY_IMAGE,)))
    assert code == 0
    m = _metrics(out)
    assert m["images"] == 5
    assert m["per_category"]["segm"] == pytest.approx({"cat": 100.0, "dog": 100 * 51 / 101})
    assert m["segm"]["AP"] == pytest.approx((100 + 100 * 51 / 101) / 2)


FALLBACK = (
    r"6 of 6 entries have a category_id that is not the dataset's id of their category_name; "
    r"scored by category_name.*run solov2 infer again"
)


def test_category_id_decides_and_name_is_the_fallback(root: Path, tmp_path: Path) -> None:
    """``category_id`` decides; ``category_name`` only where the id is not the dataset's id of
    that name: the ``label + 1`` ids that ``solov2 infer`` wrote before checkpoints stored the
    dataset's (a warning that says how to write the ids)."""
    gt = _gt_as_coco_results()
    named = [dict(r, category_name=CATS[r["category_id"]]) for r in gt]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # ids that agree with the names: silent
        code, out = _eval(tmp_path, root, named)
    assert code == 0 and _metrics(out)["segm"]["AP"] == pytest.approx(100.0)
    # the old label + 1 ids (cat 1, dog 2: no dataset ids) with the right names
    old = [dict(r, category_id=1 + list(CATS).index(r["category_id"])) for r in named]
    with pytest.warns(DataWarning, match=FALLBACK):
        code, out = _eval(tmp_path, root, old)
    assert code == 0 and _metrics(out)["segm"]["AP"] == pytest.approx(100.0)
    # ids of the other dataset category (cat 3 <-> dog 7) with the right names
    swapped = [dict(r, category_id=7 if r["category_id"] == 3 else 3) for r in named]
    with pytest.warns(DataWarning, match=FALLBACK):
        code, out = _eval(tmp_path, root, swapped)
    assert code == 0 and _metrics(out)["segm"]["AP"] == pytest.approx(100.0)
    # a name that is no dataset category leaves the id in charge: right ids, AP 100
    entries = [dict(r, category_name="class_0") for r in gt]
    code, out = _eval(tmp_path, root, entries)
    assert code == 0 and _metrics(out)["segm"]["AP"] == pytest.approx(100.0)
    # and swapped ids without names are scored as the wrong categories: AP 0
    code, out = _eval(tmp_path, root, [dict(r, category_name=None) for r in swapped])
    assert code == 0 and _metrics(out)["segm"]["AP"] == pytest.approx(0.0)


def test_max_dets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """150 exact predictions in one image: a cap of 100 recalls 100/150 (67 of the 101 recall
    points), 150 or more score 100. The default cap follows model.test.max_per_img."""
    n, h, w = 150, 40, 160
    squares = [
        (x * 5, y * 5, x * 5 + 4, y * 5 + 4, 3) for y, x in (divmod(k, 30) for k in range(n))
    ]
    root = tmp_path / "dense"
    _write_dataset(root, {1: ("1.png", squares)}, h, w)
    entries = [
        {
            "image_id": 1,
            "category_id": 3,
            "segmentation": _rle(*s[:4], h, w),
            "score": 1.0 - k / 1000,
        }
        for k, s in enumerate(squares)
    ]
    got = {}
    for key, extra in (
        ("default", []),
        ("100", ["--max-dets", "100"]),
        ("150", ["--max-dets", "150"]),
        ("cfg", ["model.test.max_per_img=300"]),
    ):
        code, out = _eval(tmp_path, root, entries, *extra)
        assert code == 0
        got[key] = _metrics(out)
    assert [got[k]["max_dets"] for k in ("default", "100", "150", "cfg")] == [100, 100, 150, 300]
    for k in ("default", "100"):
        assert got[k]["segm"]["AP"] == pytest.approx(100 * 67 / 101, abs=0.01)
    for k in ("150", "cfg"):
        assert got[k]["segm"]["AP"] == pytest.approx(100.0)
    assert "task (max 300 dets)" in capsys.readouterr().out


MATCH_KEYS = {"score_thr", "iou_thresholds", "matching", "all", "per_class"}
COUNT_KEYS = {"iou", "tp", "fp", "fn", "precision", "recall", "f1", "accuracy"}


def _match_case() -> list[dict[str, Any]]:
    """Hand-counted matching: image 2's second cat predicted 16x21 of its 16x28 (IoU 0.75),
    image 5's dog missed, image 7 (no objects) gets a cat at score 0.5 and one at 0.2, the
    rest exact. At score >= 0.3: TP 5, FP 1, FN 1 for IoU 0.5-0.75; TP 4, FP 2, FN 2 above."""
    out = [r for r in _gt_as_coco_results() if r["image_id"] != POLY_IMAGE]
    second_cat = [r for r in out if r["image_id"] == 2][1]
    assert second_cat["segmentation"] == _rle(30, 10, 46, 38)
    second_cat["segmentation"] = _rle(30, 10, 46, 31)
    out += [
        {"image_id": 7, "category_id": 3, "segmentation": _rle(0, 0, 10, 10), "score": s}
        for s in (0.5, 0.2)
    ]
    return out


def test_match_metrics_known_counts(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _eval(tmp_path, root, _match_case())
    assert code == 0
    m = _metrics(out)["match"]
    assert set(m) == MATCH_KEYS and m["score_thr"] == 0.3 and len(m["iou_thresholds"]) == 10
    assert set(m["per_class"]) == {"cat", "dog"}
    rows = m["all"]["thresholds"]
    assert all(set(t) == COUNT_KEYS for t in rows)
    assert [(t["tp"], t["fp"], t["fn"]) for t in rows] == [(5, 1, 1)] * 6 + [(4, 2, 2)] * 4
    assert rows[0]["precision"] == pytest.approx(5 / 6) and rows[0]["accuracy"] == 5 / 7
    cat, dog = (m["per_class"][k]["thresholds"][0] for k in ("cat", "dog"))
    assert (cat["tp"], cat["fp"], cat["fn"], dog["tp"], dog["fp"], dog["fn"]) == (4, 1, 0, 1, 0, 1)
    printed = capsys.readouterr().out
    assert printed.index("task (max 100 dets)") < printed.index("matching (score >= 0.3)")
    row = next(ln for ln in printed.splitlines() if ln.startswith("IoU 0.50"))
    assert [c.strip() for c in row.split("|")] == [
        "IoU 0.50", "0.833", "0.833", "0.833", "0.714", "5", "1", "1",
    ]  # fmt: skip
    # a lower threshold counts the 0.2 prediction too; COCO AP is the same
    code, low = _eval(tmp_path, root, _match_case(), "--match-score-thr", "0.1")
    assert code == 0 and _metrics(low)["segm"] == _metrics(out)["segm"]
    assert _metrics(low)["match"]["all"]["thresholds"][0]["fp"] == 2
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        _eval(tmp_path, root, [], "--match-score-thr", "1.5")
    assert e.value.code == 2
    one_line_error(capsys.readouterr().err, "eval", "--match-score-thr", "1.5", "<= 1")


def _mutate(fn):  # noqa: ANN001, ANN202
    def make() -> list[dict[str, Any]]:
        entries = _gt_as_coco_results()
        fn(entries)
        return entries

    return make


BAD = {
    "not_a_list": (lambda: {"annotations": []}, ["must be a list of predictions"]),
    "entry_not_object": (_mutate(lambda e: e.__setitem__(0, 5)), ["entry 0 must be an object"]),
    "no_score": (_mutate(lambda e: e[1].pop("score")), ["entry 1", "'score'"]),
    "bad_score": (_mutate(lambda e: e[0].update(score="high")), ["entry 0.score"]),
    "no_segmentation": (_mutate(lambda e: e[2].pop("segmentation")), ["entry 2", "'segmentation'"]),
    "rle_size": (
        _mutate(lambda e: e[0].update(segmentation=_rle(0, 0, 4, 4, 20, 20))),
        ["entry 0.segmentation.size", "[20, 20]", "[40, 48]", "image 1"],
    ),
    "rle_counts": (
        _mutate(lambda e: e[0]["segmentation"].update(counts="!!")),
        ["entry 0.segmentation.counts"],
    ),
    "unknown_category": (
        _mutate(lambda e: e[3].update(category_id=99)),
        ["entry 3", "unknown category", "99", "3 'cat'"],
    ),
    "no_image": (_mutate(lambda e: e[0].pop("image_id")), ["entry 0", "'image_id'"]),
    "ambiguous_basename": (
        _mutate(lambda e: (e[0].pop("image_id"), e[0].update(file_name="x/b.png"))),
        ["entry 0.file_name", "2 dataset images by basename"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_results_are_one_line_errors(
    case: str, root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make, needles = BAD[case]
    code, out = _eval(tmp_path, root, make())
    assert code == 2
    one_line_error(capsys.readouterr().err, "eval", str(tmp_path / "preds.json"), *needles)
    assert not out.exists()  # nothing half-written


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        ([], ["exactly one of --checkpoint"]),
        (["--checkpoint", "x.pth", "--results", "p.json"], ["exactly one of --checkpoint"]),
        (["--results", "p.json", "--max-dets", "0"], ["--max-dets 0", ">= 1"]),
    ],
)
def test_bad_flags(argv: list[str], needles: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", *argv]) == 2
    one_line_error(capsys.readouterr().err, "eval", *needles)


def test_bad_files(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = _eval(tmp_path, root, None, raw="[{")
    assert code == 2
    one_line_error(capsys.readouterr().err, "eval", "preds.json", "invalid JSON")
    assert (
        main(
            [
                "eval",
                "--results",
                str(tmp_path / "none.json"),
                "--data-root",
                str(root),
                "--val-split",
                "val",
            ]
        )
        == 2
    )
    one_line_error(capsys.readouterr().err, "eval", "none.json", "results file not found")
