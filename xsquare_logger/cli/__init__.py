"""The xsq command line: one module per command group; every console script points here."""
