"""Batch generation over every process of a job: `python -m mgft_train.generate` (see main)."""
