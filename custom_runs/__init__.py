"""Running configurations (layer 3): options, identity, run files, the experiment, the
distributed set-up, the compute path, metrics; and, in the sub-package table/, tables of
runs and their launchers. Imports the packages below it, never custom_reports."""
