"""The bottom layer: what every package needs (the per-dataset settings table, the collectives,
atomic file writing, the errors reported in one line, the handling of stop signals); it
imports nothing of the project."""
