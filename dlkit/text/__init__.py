"""Shared text layer: special tokens, greedy/beam search over a step interface, BLEU/chrF, sentence
splitting and bounded line reading. Library code only (no CLI); tasks import it, never each other."""
