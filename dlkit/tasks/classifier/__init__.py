"""Image classifiers trained with the airbench recipe (``dlkit classifier-train``)."""
