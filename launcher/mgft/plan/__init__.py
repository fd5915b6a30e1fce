"""`mgft plan`: per-GPU memory estimates for each strategy, and the pick `--strategy auto` uses.
Pure arithmetic on the model's shapes; no torch."""
