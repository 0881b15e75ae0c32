"""``--compile`` on multi-scale data: batches padded to a few canvases (``solov2.data.canvas``)
so that the compiled model sees static shapes; compiled losses equal eager ones."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from solov2.data.canvas import canvas_buckets, pick_canvas
from solov2.data.loader import collate
from solov2.model import build_model
from solov2.presets import get_config
from solov2.structures import Batch, Instances, Sample
from solov2.train.setup import compile_for_training
from solov2.train.step import train_step


def test_canvas_buckets_known_answer() -> None:
    """Two landscape images and one portrait at two scales, 2 buckets per orientation (sizes
    worked out by hand with the mmcv keep-ratio rule, padded to 32)."""
    sizes = [(100, 200), (100, 150), (200, 100)]
    got = canvas_buckets(sizes, [[64, 32], [128, 64]], 32, 2)
    assert got == [(32, 64), (64, 32), (64, 128), (128, 64)]
    assert canvas_buckets(sizes, [[64, 32], [128, 64]], 32, 1) == [(64, 128), (128, 64)]
    assert canvas_buckets(sizes, [[64, 32]], 32, 3, grouped=False) == [(32, 64), (64, 64)]
    assert pick_canvas(64, 96, got) == (64, 128) and pick_canvas(30, 40, got) == (32, 64)
    assert pick_canvas(200, 10, got) is None


def _sample(h: int, w: int, seed: int) -> Sample:
    g = torch.Generator().manual_seed(seed)
    img = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)
    masks = torch.zeros((2, h, w), dtype=torch.uint8)
    masks[0, 2 : h // 2, 3 : w // 2] = 1
    masks[1, h // 3 :, w // 4 : w - 2] = 1
    boxes = torch.tensor([[3, 2, w // 2, h // 2], [w // 4, h // 3, w - 2, h]], dtype=torch.float32)
    return Sample(img, Instances(masks, torch.tensor([seed % 4, 1]), boxes), seed, (h, w))


def test_collate_pads_to_the_canvas() -> None:
    b = collate([_sample(50, 70, 0), _sample(40, 90, 1)], 32, canvases=[(64, 96), (96, 128)])
    assert b.images.shape[-2:] == (64, 96) and b.targets[0].masks.shape[-2:] == (64, 96)
    assert b.image_sizes.tolist() == [[50, 70], [40, 90]]
    big = collate([_sample(100, 70, 0)], 32, canvases=[(64, 96)])  # none holds it: tight
    assert big.images.shape[-2:] == (128, 96)


def _batches() -> list[Batch]:
    """Batches of different content sizes on two canvases: A, B, A', B', A."""
    canvases = [(64, 96), (96, 64)]
    pairs = [
        ((50, 70), (60, 90)),
        ((90, 40), (70, 60)),
        ((64, 96), (33, 50)),
        ((96, 64), (80, 33)),
        ((40, 40), (50, 80)),
    ]
    return [
        collate([_sample(*a, 2 * i), _sample(*b, 2 * i + 1)], 32, canvases=canvases)
        for i, (a, b) in enumerate(pairs)
    ]


def _run(
    backend: Any,
) -> tuple[list[dict[str, torch.Tensor]], list[dict[str, torch.Tensor]], int, list[int]]:
    torch._dynamo.reset()
    cfg = get_config("solov2_demo")
    torch.manual_seed(0)
    eager = build_model(cfg).train()
    compiled_model = copy.deepcopy(eager)
    graphs: list[int] = []

    def counting(gm: Any, example_inputs: Any) -> Any:
        graphs.append(1)
        if backend == "eager":
            return gm.forward
        from torch._inductor.compile_fx import compile_fx

        return compile_fx(gm, example_inputs)

    net = compile_for_training(compiled_model, backend=counting)
    want, got, after = [], [], []
    for b in _batches():
        want.append(train_step(eager, b, cfg, "none"))
        got.append(train_step(net, b, cfg, "none"))
        after.append(len(graphs))
    return want, got, len({tuple(b.images.shape) for b in _batches()}), after


def test_compile_graphs_bounded_by_canvases() -> None:
    """Dynamo guards on shapes only: a graph per canvas, none for new content sizes on a canvas
    it has seen (backend ``eager``: the guards, no code generation)."""
    want, got, n_canvases, after = _run("eager")
    assert n_canvases == 2
    assert after[1] == after[-1] > 0  # every graph compiled on the first two batches
    assert after[1] == 2 * after[0]  # the second canvas compiled as many graphs as the first
    for w, g in zip(want, got):
        for k in w:
            torch.testing.assert_close(g[k], w[k], rtol=0, atol=0)


@pytest.mark.slow
def test_compiled_losses_equal_eager_inductor() -> None:
    """Inductor-generated code on the CPU: the same losses up to float noise, two canvases, no
    graph compiled after the first pass over them."""
    want, got, _, after = _run("inductor")
    assert after[1] == after[-1]
    for w, g in zip(want, got):
        for k in w:
            torch.testing.assert_close(g[k], w[k], rtol=1e-4, atol=1e-5)


def test_training_canvases(tmp_path: Any) -> None:
    """``solov2 train --compile`` pads to 2 canvases per orientation unless
    ``data.canvas_buckets`` says otherwise; without either, batches stay tight."""
    from solov2.config import apply_overrides
    from solov2.data.loader import dataset_from_config
    from solov2.data.synthetic import make_synthetic_coco
    from solov2.train.run import _canvases

    make_synthetic_coco(tmp_path, num_images=(3, 1), image_size=(48, 64), empty_fraction=0)
    cfg = apply_overrides(
        get_config("solov2_demo"),
        [
            f"data.data_root={tmp_path}",
            "data.train_split=train",
            "data.train_scales=[[128,96],[96,64],[64,32]]",
        ],
    )
    ds = dataset_from_config(cfg.data, "train", train=True)
    assert _canvases(cfg, ds, compile=False) is None
    # 48x64 landscape images at the three scales: 96x128, 64x96 (64x85 padded), 32x64 (32x43)
    assert _canvases(cfg, ds, compile=True) == [(64, 96), (96, 128)]
    cfg.data.canvas_buckets = 3
    assert _canvases(cfg, ds, compile=False) == [(32, 64), (64, 96), (96, 128)]


def test_coordconv_uses_its_symbolic_linspace_for_symbolic_sizes_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Concrete sizes take ``torch.linspace`` even where ``torch.compiler.is_exporting()`` says
    true, as it did inside ``torch.compile`` on torch 2.11: there the export-only formula
    (``torch.sym_max`` on a plain int returns an int) broke the head's loop, and dynamo compiled
    each tower conv apart, one graph per level, until its recompile limit (R50 ``--compile``
    training at 1.27x eager). Symbolic sizes (dynamic shapes) take the formula, in one graph,
    with ``linspace``'s values."""
    from solov2.model import layers

    def symbolic_only(n: Any, like: torch.Tensor) -> torch.Tensor:
        assert isinstance(n, torch.SymInt), f"symbolic linspace on a concrete size {n}"
        return formula(n, like)

    formula = layers._linspace_symbolic
    monkeypatch.setattr(layers, "_linspace_symbolic", symbolic_only)
    monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
    x = torch.zeros(1, 4, 5, 7)
    want = torch.stack(
        [torch.linspace(-1, 1, 7).expand(5, 7), torch.linspace(-1, 1, 5).view(5, 1).expand(5, 7)]
    )
    torch.testing.assert_close(layers.coord_features(x)[0], want, rtol=0, atol=0)
    torch._dynamo.reset()
    dyn = torch.compile(layers.coord_features, dynamic=True, fullgraph=True, backend="eager")
    for h, w in ((5, 7), (6, 9), (1, 3)):
        got = dyn(torch.zeros(2, 4, h, w))
        assert got.shape == (2, 2, h, w)
        torch.testing.assert_close(got[1, 0, 0], torch.linspace(-1, 1, w), rtol=0, atol=1e-6)
        torch.testing.assert_close(got[0, 1, :, 0], torch.linspace(-1, 1, h), rtol=0, atol=1e-6)
    torch._dynamo.reset()
