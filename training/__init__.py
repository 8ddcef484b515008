"""churnflow training."""
