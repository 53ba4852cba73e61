"""`t2ictl experiment`: a grid of runs (arms x seeds) trained, scored and compared with one protocol."""
