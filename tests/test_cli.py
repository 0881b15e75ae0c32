"""End to end through the CLI: train, resume, evaluate, infer on a tiny synthetic set, and a
few training iterations on the real coco128_seg images."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from _paths import SHARED

from solov2.cli import main
from solov2.config import apply_overrides, load_yaml, save_yaml
from solov2.data.coco import CocoInstances, DataWarning
from solov2.data.synthetic import make_synthetic_coco
from solov2.evaluation.results import read_results, to_coco_results

TINY = [
    "model.head.num_grids=[12,10,8,6,4]",
    "data.train_scales=[[96,64]]",
    "data.test_scale=[96,64]",
    "solver.batch_size=2",
    "solver.log_period=1",
    "solver.warmup_iters=2",
    "solver.checkpoint_period=2",
]


def _shared() -> Path | None:
    return SHARED if (SHARED / "datasets" / "coco128_seg").is_dir() else None


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "data"
    make_synthetic_coco(root, num_images=(8, 4), image_size=(64, 96), seed=1)
    return root


def test_train_resume_eval_infer(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    base = [
        "train",
        "--config",
        "solov2_demo",
        "--data-root",
        str(data),
        "--device",
        "cpu",
        "--output-dir",
        str(out),
    ]
    assert main([*base, "--max-iters", "4", "--throughput", *TINY]) == 0
    assert "steady-state throughput" in capsys.readouterr().out.strip().splitlines()[-1]
    assert (out / "last_checkpoint").read_text().strip() == "model_final.pth"
    first = torch.load(out / "model_final.pth", weights_only=True)
    assert first["iteration"] == 4 and first["config"]["model"]["num_classes"] == 4

    # resume continues from the last checkpoint up to the new end
    assert main([*base, "--max-iters", "6", *TINY, "--resume"]) == 0
    final = torch.load(out / "model_final.pth", weights_only=True)
    assert final["iteration"] == 6
    log = (out / "log.txt").read_text()
    assert "resumed from" in log and "iteration 4" in log
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in rows if "loss" in r][-2:] == [5, 6]
    assert any("segm/AP" in r for r in rows)  # evaluation at the end of the resumed run

    ev = tmp_path / "eval"
    assert (
        main(
            [
                "eval",
                "--checkpoint",
                str(out),
                "--data-root",
                str(data),
                "--split",
                "val",
                "--device",
                "cpu",
                "--output-dir",
                str(ev),
            ]
        )
        == 0
    )
    metrics = json.loads((ev / "metrics.json").read_text())
    assert set(metrics["segm"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    assert (ev / "coco_instances_results.json").is_file()
    # the cap follows model.test.max_per_img (demo preset: 100), here and in training's eval
    assert metrics["max_dets"] == 100
    train_eval = json.loads((out / "eval" / "metrics.json").read_text())
    assert train_eval["max_dets"] == 100 and "match" not in train_eval  # opt-in: eval's
    # the matching metrics of the same predictions: every ground truth object is a TP or a FN
    match = metrics["match"]
    assert set(match) == {"score_thr", "iou_thresholds", "matching", "all", "per_class"}
    assert match["score_thr"] == 0.3 and len(match["all"]["thresholds"]) == 10
    val = json.loads((data / "annotations" / "instances_val.json").read_text())
    objects = sum(not a.get("iscrowd", 0) for a in val["annotations"])
    assert {t["tp"] + t["fn"] for t in match["all"]["thresholds"]} == {objects}

    # the barely trained model detects nothing at the preset thresholds: a config without
    # thresholds, capped at 20 per image, for the detection caps and predictions files below
    loose = tmp_path / "loose.yaml"
    save_yaml(
        apply_overrides(
            load_yaml(out / "config.yaml"),
            ["model.test.score_thr=0.0", "model.test.update_thr=0.0", "model.test.max_per_img=20"],
        ),
        loose,
    )
    got = {}
    for cap in ("default", "3"):
        assert (
            main(
                [
                    "eval",
                    "--checkpoint",
                    str(out),
                    "--config",
                    str(loose),
                    "--data-root",
                    str(data),
                    "--split",
                    "val",
                    "--device",
                    "cpu",
                    "--output-dir",
                    str(tmp_path / f"eval_{cap}"),
                    *(["--max-dets", cap] if cap != "default" else []),
                ]
            )
            == 0
        )
        got[cap] = json.loads((tmp_path / f"eval_{cap}" / "metrics.json").read_text())
    assert got["default"]["max_dets"] == 20 and got["3"]["max_dets"] == 3
    assert got["default"]["num_detections"] == 4 * 20
    assert got["3"]["segm"]["AP"] <= got["default"]["segm"]["AP"] + 1e-9  # AP grows with cap
    # scoring the written results file again gives the same numbers, without the model
    assert (
        main(
            [
                "eval",
                "--results",
                str(tmp_path / "eval_default" / "coco_instances_results.json"),
                "--data-root",
                str(data),
                "--split",
                "val",
                "--max-dets",
                "20",
                "--output-dir",
                str(tmp_path / "rescored"),
            ]
        )
        == 0
    )
    rescored = json.loads((tmp_path / "rescored" / "metrics.json").read_text())
    for key in ("segm", "bbox", "per_category", "num_detections", "images", "max_dets"):
        assert rescored[key] == got["default"][key], key
    # the fast path (channels-last FastModel; fp32 on CPU) scores the same
    assert (
        main(
            [
                "eval",
                "--checkpoint",
                str(out),
                "--data-root",
                str(data),
                "--split",
                "val",
                "--device",
                "cpu",
                "--output-dir",
                str(tmp_path / "eval_fast"),
                "--fast",
            ]
        )
        == 0
    )
    fast = json.loads((tmp_path / "eval_fast" / "metrics.json").read_text())
    assert fast["segm"] == pytest.approx(metrics["segm"], abs=0.05)

    vis = tmp_path / "vis"
    assert (
        main(
            [
                "infer",
                "--checkpoint",
                str(out / "model_final.safetensors"),
                str(data / "val"),
                "--output-dir",
                str(vis),
                "--device",
                "cpu",
                "--score-thr",
                "0.0",
            ]
        )
        == 0
    )
    assert len(list(vis.glob("*.png"))) == 4
    preds = json.loads((vis / "predictions.json").read_text())
    assert all(
        {"file_name", "category_id", "score", "bbox", "segmentation"} <= set(p) for p in preds
    )
    # infer's predictions.json (file names as given, scores rounded) scores as eval did
    assert (
        main(
            [
                "infer",
                "--checkpoint",
                str(out),
                "--config",
                str(loose),
                str(data / "val"),
                "--output-dir",
                str(tmp_path / "vis_loose"),
                "--device",
                "cpu",
                "--score-thr",
                "0.0",
            ]
        )
        == 0
    )
    # the synthetic ids are 1, 3, 7, 9: the checkpoint stores them, infer writes them, and the
    # file is scored by id (no name fallback, no warning)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        assert (
            main(
                [
                    "eval",
                    "--results",
                    str(tmp_path / "vis_loose" / "predictions.json"),
                    "--data-root",
                    str(data),
                    "--split",
                    "val",
                    "--max-dets",
                    "20",
                    "--output-dir",
                    str(tmp_path / "scored"),
                ]
            )
            == 0
        )
    scored = json.loads((tmp_path / "scored" / "metrics.json").read_text())
    assert scored["skipped_entries"] == 0 and scored["num_detections"] == 80
    assert scored["segm"] == pytest.approx(got["default"]["segm"], abs=1e-6, nan_ok=True)
    # every prediction matched to its image and category: the same masks as eval's
    ds = CocoInstances(data / "annotations" / "instances_val.json", data / "val", train=False)
    preds_file = str(tmp_path / "vis_loose" / "predictions.json")
    mine, _ = to_coco_results(read_results(preds_file), ds, preds_file)
    theirs = json.loads((tmp_path / "eval_default" / "coco_instances_results.json").read_text())
    key = lambda r: (r["image_id"], r["category_id"], r["segmentation"]["counts"])  # noqa: E731
    assert sorted(map(key, mine)) == sorted(map(key, theirs))


def test_bad_config_key_is_one_line(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "train",
            "--config",
            "solov2_demo",
            "--data-root",
            str(data),
            "--device",
            "cpu",
            "--output-dir",
            str(tmp_path),
            "model.head.nope=1",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "model.head.nope" in err[0]


@pytest.mark.skipif(_shared() is None, reason="shared/datasets/coco128_seg not found")
def test_a_few_iterations_on_coco128(tmp_path: Path) -> None:
    shared = _shared()
    assert shared is not None
    out = tmp_path / "coco128"
    code = main(
        [
            "train",
            "--config",
            "solov2_light_mnv2_448",
            "--device",
            "cpu",
            "--data-root",
            str(shared / "datasets" / "coco128_seg"),
            "--train-split",
            "train",
            "--val-split",
            "val",
            "--output-dir",
            str(out),
            "--max-iters",
            "3",
            "--no-eval",
            "--backbone-weights",
            str(shared / "weights" / "mobilenet_v2-b0353104.pth"),
            "data.train_scales=[[192,128]]",
            "solver.batch_size=2",
            "solver.log_period=1",
        ]
    )
    assert code == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 3 and all(v == v and v < 100 for v in losses)
    ckpt = torch.load(out / "model_final.pth", weights_only=True)
    assert ckpt["config"]["model"]["num_classes"] == 80
    assert len(ckpt["config"]["data"]["class_names"]) == 80


def test_overrides_may_come_between_options(capsys: pytest.CaptureFixture[str]) -> None:
    from solov2.cli import parse_args

    args = parse_args(
        [
            "train",
            "--config",
            "solov2_demo",
            "solver.base_lr=0.1",
            "--no-eval",
            "solver.max_iters=3",
            "--profile",
            "1:2",
            "model.head.sigma=0.3",
        ]
    )
    assert args.opts == ["solver.base_lr=0.1", "solver.max_iters=3", "model.head.sigma=0.3"]
    assert args.no_eval and args.profile == "1:2"
    with pytest.raises(SystemExit):
        parse_args(["train", "--config", "solov2_demo", "a=1", "--no-eval", "stray"])
    assert "unrecognized arguments: stray" in capsys.readouterr().err
