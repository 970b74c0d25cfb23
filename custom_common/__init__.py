"""The bottom layer: what every package needs (the per-dataset settings table, the collectives,
atomic file writing); it imports nothing of the project."""
