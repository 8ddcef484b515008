"""churnflow flows."""
