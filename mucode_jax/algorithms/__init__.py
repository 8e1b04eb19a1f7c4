"""Expert-iteration algorithms (μCode and its baselines): data modes and drivers."""
