"""Process plumbing: distributed set-up and collectives (:mod:`.dist`), CPU threads on shared
machines (:mod:`.threads`), devices and autocast (:mod:`.device`), the logger (:mod:`.log`)."""
