"""Local and test tooling: the embedded AWS emulator, the simulated data plane, clusters, the demo.

Nothing in the product imports this package (an import-linter contract).
"""
