"""`mgft generate`: batch generation as a job on any backend (launcher side, torch-free)."""
