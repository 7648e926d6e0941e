"""`python -m crbench.cli`."""

from crbench.cli import main

main()
