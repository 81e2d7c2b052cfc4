"""Pure domain logic: rendering, the status machine, tenancy, settings, the outcome policy.

No AWS calls and no clock readings of its own (clocks and clients are passed in). Imports only
:mod:`oab.controller.api` and :mod:`oab.controller.base` (and ``oab.queue`` for shared budgets).
"""
