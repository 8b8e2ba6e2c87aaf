"""fit-random-labels: Zhang et al. 2017, "Understanding deep learning requires rethinking generalization"."""
