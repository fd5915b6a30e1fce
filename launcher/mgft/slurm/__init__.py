"""Slurm: host lists, sbatch options, the per-node task, and job queries.

Modules here that run on compute nodes (nodelist, node, task) import only the standard
library and light mgft modules, so a job needs no more than the trainer does.
"""
