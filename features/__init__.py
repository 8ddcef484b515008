"""churnflow features."""
