"""Shared pure network modules (no I/O, no CLI): attention, classifier architectures, pretrained backbones.

Import the submodule you need (``dlkit.nets.classifiers``, ``dlkit.nets.efficientnet``, ``dlkit.nets.attention``);
this package imports nothing itself so that ``dlkit --help`` stays free of torch.
"""
