"""The one generic training system: optimizer, pure train step, sharding, checkpoints, loop."""
