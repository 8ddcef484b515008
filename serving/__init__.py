"""churnflow serving."""
