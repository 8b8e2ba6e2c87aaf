"""The shared layer: runtime, optimisation, model files, reporting, I/O and errors. Knows no task."""
