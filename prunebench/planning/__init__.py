"""Planning a sweep before it runs (``scripts/plan.py``): which points it has and which are
recorded already (:mod:`.points`), how many samples each stage trains (:mod:`.work`), how fast
the hardware trains them (:mod:`.throughput`) and what that adds up to (:mod:`.estimate`).
Nothing here trains a model or writes a record."""
