"""Running a point: the pipeline's stages, training, caching, resuming, DDP, sweeps, tracking.

Importing it registers the run config's schema with Hydra (``schema.register_schema``), which
``conf/config.yaml`` names first in its defaults list: anything that composes the run config
(run.py, the scripts, the tests) imports from here first."""

from prunebench.running.schema import register_schema

register_schema()
