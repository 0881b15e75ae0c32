"""COCO evaluation: inference over a dataset (:mod:`.evaluate`), the COCOeval wrapper
(:mod:`.coco_eval`) and the scoring of a predictions file (:mod:`.results`)."""
