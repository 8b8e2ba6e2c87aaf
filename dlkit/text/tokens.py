"""Special token ids shared by every dlkit text model (translation, captioning).

The sentencepiece models that dlkit trains reserve the same ids (``pad_id=0, unk_id=1, bos_id=2,
eos_id=3``), so a decoder, its vocabulary and :mod:`dlkit.text.search` agree without a lookup table.
"""

from __future__ import annotations

PAD, UNK, BOS, EOS = 0, 1, 2, 3
NAMES = {PAD: "<pad>", UNK: "<unk>", BOS: "<s>", EOS: "</s>"}
SPECIALS = tuple(NAMES.values())  # in id order: a word vocabulary starts with these
NUM_SPECIAL = len(SPECIALS)
