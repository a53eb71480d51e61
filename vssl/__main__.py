"""`python -m vssl` (what `torchrun -m vssl` runs)."""

from vssl.cli import main

main()
