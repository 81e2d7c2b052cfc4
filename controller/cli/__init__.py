"""``oabctl``: the command-line client (kubectl's conventions), one module per command group."""
