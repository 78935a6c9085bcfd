"""Pure Flax linen modules: one attention op and one transformer block for every model."""
