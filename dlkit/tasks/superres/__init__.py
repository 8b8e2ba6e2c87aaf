"""Super-resolution (SRResNet / SRGAN). Constants shared by the torch-free CLI and the library."""

# Input pixels `dlkit superres` accepts by default (--max-pixels): a 4000x3000 phone photo passes; the x4 output of
# the largest allowed input is 256 Mpx (768 MB as uint8); a 95 Mpx decompression bomb is refused before decoding.
DEFAULT_MAX_PIXELS = 16_000_000
