"""Training: the library entry point (:mod:`.run`), the loop (:mod:`.loop`) and its step
(:mod:`.step`), initial weights and wrapping (:mod:`.setup`), the schedule, logging sinks,
output-folder housekeeping, the profiler and the ``SOLOV2_FAULT_RANK_ITER`` testing aid
(:mod:`.faults`)."""
