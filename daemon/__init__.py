"""eddy's runtime: config, pipeline loop, checkpoints, HTTP sidecar, metrics, CLI."""

__version__ = "0.1.0.dev0"
