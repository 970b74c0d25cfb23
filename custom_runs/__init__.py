"""Running configurations: options, identity, run files, the experiment, tables of runs and
their launchers, many processes; imports the packages below it, never custom_reports."""
