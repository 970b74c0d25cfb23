"""A table of runs and its runner (layer 3, inside custom_runs): sweep.py holds the cells of a
table as data, each one implicit-augment.py command; the launchers run them. A run's own
modules never import this package: a run knows nothing of the table it belongs to."""
