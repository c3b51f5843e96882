"""The hot route, ``GET /v1/customers/{customer_id}/coupons``, answered without FastAPI.

Its pieces, from the socket inwards:

- ``fence``: which HTTP protocol uvicorn runs, ``protocol``'s or its stock one.
- ``protocol``: uvicorn's httptools protocol answering ordinary requests itself.
- ``asgi``: the ASGI application served, answering the requests the protocol left.
- ``parsing``: which requests are ordinary enough to be answered here.
- ``batcher``: the lists of requests close together fetched in one query, in time.

Failures are answered through ``problems.failure_problem`` and counted in ``metrics``,
as FastAPI's routes are.
"""
