"""Traces, metrics and log scrubbing for every process (controller, ``oabctl``, ``oab-agent``)."""
