"""Evaluation: inference over a dataset (:mod:`.evaluate`), the COCOeval wrapper
(:mod:`.coco_eval`), the scoring of a predictions file (:mod:`.results`) and the
instance-matching metrics of cell and nucleus segmentation (:mod:`.match`: precision, recall,
F1, TP/(TP+FP+FN) per IoU threshold, the DSB 2018 score)."""
