"""Reporting: result tables, figures, the suspects report, read from the run files; imports
every package below it (the scripts stand on top)."""
