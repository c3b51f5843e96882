"""A checkout's reservation calls, as a till would make them before ringing up coupons.

The simulator (``simulator.simulate``) uses it to hold coupon uses before some sales and
to leave a few holds to lapse, so a demo shows reservations consumed and expiring.
"""

from __future__ import annotations

import httpx

__all__ = ["Checkout"]


class Checkout:
    """Reservation calls to one coupon-query with one ``checkout`` (or ``admin``) key."""

    def __init__(self, base_url: str, key: str, *, timeout: float = 5.0) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout
        )

    async def hold(
        self,
        customer_id: str,
        coupon_id: str,
        uses: int,
        *,
        ttl_seconds: int,
        idempotency_key: str,
    ) -> str | None:
        """The reservation id, or None when the coupon cannot be held (409) or is not in
        the catalog (404): the till then sells without a reservation, as the contract lets
        it. Any other answer is raised."""
        response = await self._http.post(
            f"/v1/customers/{customer_id}/coupons/{coupon_id}/reservations",
            json={"uses": uses, "ttl_seconds": ttl_seconds},
            headers={"Idempotency-Key": idempotency_key},
        )
        if response.status_code in {404, 409}:
            return None
        response.raise_for_status()
        reservation_id: str = response.json()["reservation_id"]
        return reservation_id

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()
