"""A table of runs and its runner (part of custom_runs, layer 3). A run's own modules never
import this package: a run knows nothing of the table it belongs to.

    sweep.py      the cells of a table as data, each one implicit-augment.py command
    processes.py  a run's process: its command, its start and log, its threads, stopping it
    outcomes.py   what a cell ends as (finished, skipped, failed, running elsewhere), progress
    local.py      the local launcher: worker slots on this machine's cores or GPUs
    slurm.py      the Slurm launcher: one job array through submitit, followed to its end

Every run is `implicit-augment.py ... --resume` in a process of its own, its output appended
to its log, so a launcher never needs to know how far a run got: starting it again finishes
it, and a finished cell is skipped without a process.
"""
