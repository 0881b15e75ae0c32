"""The parts of ``solov2 bench`` (:mod:`solov2.cli.bench` is the command): its typed options
(:mod:`.options`), timing (:mod:`.timing`), inputs and the loader mode (:mod:`.data`), our
model's runs (:mod:`.ours`), the same-run peers, torchvision's Mask R-CNN (:mod:`.maskrcnn`)
and mmdetection's SOLOv2 (:mod:`.mmdet`, optional: mmdet is imported only for
``--compare mmdet``), the FLOP counter (:mod:`.complexity`) and the report (:mod:`.report`)."""
