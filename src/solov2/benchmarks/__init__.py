"""The parts of ``solov2 bench`` (:mod:`solov2.bench` is the command): timing, inputs and the
loader mode (:mod:`.data`), our model's runs (:mod:`.ours`) and the same-run peers,
torchvision's Mask R-CNN (:mod:`.maskrcnn`) and mmdetection's SOLOv2 (:mod:`.mmdet`, optional:
imported only for ``--compare mmdet``)."""
