"""The ground every other layer stands on; imports nothing of ``oab.controller``.

Names and layouts, the task contract, the error hierarchy and the credential shapes: what the
API models, the pure core, the adapters and the in-task program must all agree on, kept below
all of them so that each is defined once.
"""
