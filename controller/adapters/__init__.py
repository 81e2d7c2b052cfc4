"""Thin I/O: the AWS client factory and one adapter per store or service (S3, DynamoDB, ECS).

Each adapter turns AWS answers into the domain types of :mod:`oab.controller.core` and AWS errors
into :mod:`oab.controller.base.errors`; none decides what to do next.
"""
