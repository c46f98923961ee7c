"""Running a point: the pipeline's stages, training, caching, resuming, DDP, sweeps, tracking."""
