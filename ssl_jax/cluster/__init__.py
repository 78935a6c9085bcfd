"""Where a run executes: multi-host start-up (distributed), submitit jobs on Slurm or as local
processes (executors, job), and the command that starts a run on every host of a TPU pod
slice (tpu). launch.py's --distributed / --executor / --tpu are thin calls into these."""
