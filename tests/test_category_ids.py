"""The dataset's category ids travel with the model (issue 27): how a model's labels map onto
an evaluation dataset's categories, what a config without ids gets, and every output of a model
trained on data whose categories are 1, 3, 7, 9 (config, checkpoints, Predictor, infer, eval,
eval --results, ONNX metadata)."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from _errors import one_line_error

from solov2.cli import main
from solov2.config import ConfigError, apply_overrides, load_yaml
from solov2.data.coco import CocoInstances, DataWarning
from solov2.data.coco_names import (
    COCO_CATEGORY_IDS,
    COCO_CLASSES,
    complete_categories,
    dataset_category_ids,
)
from solov2.data.synthetic import make_synthetic_coco
from solov2.errors import UserError
from solov2.infer import Predictor, load_for_inference
from solov2.presets import get_config

NAMES = ["circle", "square", "triangle", "star"]
IDS = [1, 3, 7, 9]


def test_labels_map_onto_the_dataset_by_id_then_by_name() -> None:
    where = "val.json"
    # a model trained on this dataset: its own ids
    assert dataset_category_ids((IDS, NAMES), (IDS, NAMES), where) == (IDS, None)
    # the dataset lists its categories in another order: still by id, per label
    assert dataset_category_ids((IDS, NAMES), (IDS[::-1], NAMES[::-1]), where) == (IDS, None)
    # a checkpoint from before the ids were stored (1..4 assumed): by name, and said
    ids, note = dataset_category_ids(([1, 2, 3, 4], NAMES), (IDS, NAMES), where)
    assert ids == IDS
    assert note == (
        "val.json: the checkpoint's category ids differ from the dataset's; matched by name "
        "('square' 2 -> 3, 'triangle' 3 -> 7, 'star' 4 -> 9)"
    )
    # the same ids under other names: by id, and said
    assert dataset_category_ids((IDS, NAMES), (IDS, ["circle", "b", "triangle", "d"]), where) == (
        IDS,
        "val.json: the same category ids under other names (3 'square' -> 'b', 9 'star' -> "
        "'d'); scored by id",
    )
    # other ids and other names, another count: one-line errors
    with pytest.raises(UserError) as e:
        dataset_category_ids((IDS, NAMES), ([2, 4, 6, 8], ["a", "b", "c", "d"]), where)
    assert str(e.value) == (
        "val.json: the dataset's categories (2 'a', 4 'b', 6 'c', 8 'd') are not the "
        "checkpoint's (1 'circle', 3 'square', 7 'triangle', 9 'star'): neither ids nor "
        "names match"
    )
    with pytest.raises(UserError, match="5 categories but the checkpoint predicts 4"):
        dataset_category_ids((IDS, NAMES), ([*IDS, 11], [*NAMES, "moon"]), where)
    # two dataset categories of one name cannot be told apart by name
    with pytest.raises(UserError, match="neither ids nor names match"):
        dataset_category_ids(([1, 2, 3, 4], NAMES), (IDS, ["circle", "circle", "x", "y"]), where)


def test_configs_without_ids(caplog: pytest.LogCaptureFixture) -> None:
    """Ids 1..N assumed for a config from before (one warning per source), COCO's for COCO's
    80 classes; a config with ids keeps them; ids must be distinct."""
    cfg = get_config("solov2_demo")
    cfg.data.class_names = list(NAMES)
    with caplog.at_level(logging.WARNING, logger="solov2"):
        complete_categories(cfg, "old_run/model_final.pth")
    assert cfg.data.category_ids == [1, 2, 3, 4]
    assert [r.getMessage() for r in caplog.records] == [
        "old_run/model_final.pth stores no category ids (trained before they were saved): "
        "ids 1..4 assumed in class order; if the training dataset numbers its categories "
        "otherwise, pass data.category_ids=[...] (its ids in the order of data.class_names)"
    ]
    caplog.clear()
    cfg.data.category_ids = list(IDS)
    complete_categories(cfg, "old_run/model_final.pth")
    assert cfg.data.category_ids == IDS and not caplog.records
    coco = get_config("solov2_r50_fpn_1x")
    coco.data.class_names = [n.replace(" ", "_") for n in COCO_CLASSES]  # mmdetection v1
    with caplog.at_level(logging.WARNING, logger="solov2"):
        complete_categories(coco, "coco.pth")
    assert coco.data.category_ids == list(COCO_CATEGORY_IDS) and not caplog.records
    assert coco.data.class_names == list(COCO_CLASSES)
    with pytest.raises(ConfigError, match=r"data.category_ids=\[1, 1\]: must be distinct"):
        apply_overrides(get_config("solov2_demo"), ["data.category_ids=[1,1]"])


# ---------------------------------------------------------------------------------------------
# end to end: a few training iterations on data whose categories are 1, 3, 7, 9, then every
# output that names a category

TINY = [
    "model.head.num_grids=[12,10,8,6,4]",
    "data.train_scales=[[96,64]]",
    "data.test_scale=[96,64]",
    "solver.batch_size=2",
    "solver.warmup_iters=2",
]
# the barely trained model scores below the preset thresholds: keep its best 20 per image
LOOSE = ["model.test.score_thr=0.0", "model.test.update_thr=0.0", "model.test.max_per_img=20"]
ID_OF = dict(zip(NAMES, IDS))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ids")
    data = root / "data"
    info = make_synthetic_coco(data, num_images=(8, 4), image_size=(64, 96), seed=1)
    assert info["categories"] == ID_OF  # the generator's ids: non-contiguous
    out = root / "run"
    argv = ["train", "--config", "solov2_demo", "--data-root", str(data), "--device", "cpu"]
    assert main([*argv, "--output-dir", str(out), "--max-iters", "4", "--no-eval", *TINY]) == 0
    return data, out


def _eval(args: list[str], out: Path) -> dict[str, Any]:
    assert main(["eval", *args, "--device", "cpu", "--output-dir", str(out)]) == 0
    return json.loads((out / "metrics.json").read_text())


def test_every_output_carries_the_dataset_ids(
    trained: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, run = trained
    # stored at training time: config.yaml, the checkpoint and the safetensors release
    assert load_yaml(run / "config.yaml").data.category_ids == IDS
    ckpt = torch.load(run / "model_final.pth", weights_only=True)["config"]["data"]
    assert ckpt["category_ids"] == IDS and ckpt["class_names"] == NAMES
    assert load_for_inference(run / "model_final.safetensors")[1].data.category_ids == IDS

    # Predictor and its results
    predictor = Predictor.from_checkpoint(run, device="cpu", score_thr=None, overrides=LOOSE)
    assert predictor.category_ids == IDS and predictor.class_names == NAMES
    image = sorted((data / "val").iterdir())[0]
    r = predictor(image)
    assert len(r) == 20 and r.category_ids.tolist() == [IDS[i] for i in r.labels.tolist()]
    assert {e["category_id"] for e in r.to_coco(1)} == set(r.category_ids.tolist())
    assert set(r.category_ids.tolist()) & {3, 7, 9}  # not 1..4: the dataset's own ids

    # infer's predictions.json: each entry's id is its name's in the dataset
    vis = tmp_path / "vis"
    infer = ["infer", "--checkpoint", str(run), str(data / "val"), "--output-dir", str(vis)]
    assert main([*infer, "--device", "cpu", "--score-thr", "0.0", *LOOSE]) == 0
    preds = json.loads((vis / "predictions.json").read_text())
    assert len(preds) == 4 * 20
    assert all(p["category_id"] == ID_OF[p["category_name"]] for p in preds)
    assert {p["category_id"] for p in preds} == set(IDS)  # every class, none numbered 1..4

    # eval's coco_instances_results.json: the same instances under the same ids
    ev = tmp_path / "eval"
    split = ["--data-root", str(data), "--split", "val"]
    metrics = _eval(["--checkpoint", str(run), *split, *LOOSE], ev)
    results = json.loads((ev / "coco_instances_results.json").read_text())
    assert metrics["num_detections"] == len(results) == 80
    ds = CocoInstances(data / "annotations" / "instances_val.json", data / "val", train=False)
    by_file = {ds.coco.imgs[i]["file_name"]: i for i in ds.image_ids}
    key = lambda iid, e: (iid, e["category_id"], e["segmentation"]["counts"])  # noqa: E731
    assert sorted(key(e["image_id"], e) for e in results) == sorted(
        key(by_file[Path(p["file_name"]).name], p) for p in preds
    )

    # eval --results on infer's file: scored by id, no name fallback, eval's numbers
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        scored = _eval(
            ["--results", str(vis / "predictions.json"), *split, "--max-dets", "20"], tmp_path / "s"
        )
    for k in ("segm", "bbox", "per_category", "num_detections", "images"):
        assert scored[k] == metrics[k], k

    # the ONNX metadata of the trained checkpoint (the trace itself is test_export's)
    import solov2.infer.export as export_mod

    class Program:
        def __init__(self) -> None:
            self.model = type("Model", (), {"metadata_props": {}})()

        def save(self, path: str, external_data: bool = False) -> None:
            Path(path).write_text(json.dumps(self.model.metadata_props))

    monkeypatch.setattr(export_mod.torch.onnx, "export", lambda *a, **k: Program())
    onnx = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(run), "--output", str(onnx)]) == 0
    meta = json.loads(onnx.read_text())
    assert json.loads(meta["category_ids"]) == IDS and json.loads(meta["class_names"]) == NAMES
    assert json.loads(meta["score_thr"]) == 0.3


def test_eval_on_a_dataset_numbered_otherwise(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same categories under other ids (10, 20, 30, 40): matched by name, said, the results
    file in that dataset's ids; other names: one line, nothing scored."""
    data, run = trained
    spec = json.loads((data / "annotations" / "instances_val.json").read_text())
    new = {1: 40, 3: 30, 7: 20, 9: 10}  # circle 40, square 30, triangle 20, star 10
    for c in spec["categories"]:
        c["id"] = new[c["id"]]
    for a in spec["annotations"]:
        a["category_id"] = new[a["category_id"]]
    other = tmp_path / "renumbered.json"
    other.write_text(json.dumps(spec))
    ds = ["--val-json", str(other), "--val-images", str(data / "val")]
    ref = _eval(
        ["--checkpoint", str(run), "--data-root", str(data), "--split", "val", *LOOSE],
        tmp_path / "a",
    )
    got = _eval(["--checkpoint", str(run), *ds, *LOOSE], tmp_path / "b")
    log = (tmp_path / "b" / "log.txt").read_text()
    assert "category ids differ from the dataset's; matched by name ('circle' 1 -> 40" in log
    assert got["segm"] == ref["segm"] and got["num_detections"] == ref["num_detections"]
    theirs = json.loads((tmp_path / "a" / "coco_instances_results.json").read_text())
    mine = json.loads((tmp_path / "b" / "coco_instances_results.json").read_text())
    key = lambda e: (e["image_id"], e["segmentation"]["counts"], e["score"])  # noqa: E731
    assert {key(e): new[e["category_id"]] for e in theirs} == {
        key(e): e["category_id"] for e in mine
    }
    for c in spec["categories"]:
        c["name"] = c["name"].upper()
    other.write_text(json.dumps(spec))
    capsys.readouterr()
    argv = ["eval", "--checkpoint", str(run), *ds, "--device", "cpu"]
    assert main([*argv, "--output-dir", str(tmp_path / "c")]) == 2
    line = one_line_error(
        capsys.readouterr().err, "eval", str(other), "neither ids nor names match"
    )
    assert "40 'CIRCLE'" in line and "1 'circle'" in line
    assert not (tmp_path / "c" / "metrics.json").exists()
