"""Shared image layer: the one image decoder, dataset readers, sample grids (imports downward: core only)."""
