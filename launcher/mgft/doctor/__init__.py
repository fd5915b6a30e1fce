"""`mgft doctor`: checks that find what stops multi-GPU jobs before the job finds it.

Torch-free: what torch itself reports comes from a subprocess (`checks.torch_probe`), and the
bandwidth sweep runs under torchrun (`python -m mgft.doctor.sweep`).
"""
