"""The user-facing contract: the ``oab.dev/v1`` models, OpenAB's config, manifest intake, schema.

Pure (no AWS, no clock). Imports only :mod:`oab.controller.base`.
"""
