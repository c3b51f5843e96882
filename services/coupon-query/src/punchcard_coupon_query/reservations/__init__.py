"""Reservations: uses of a coupon held for a customer at a checkout (CONTRACT.md section 5).

``decision`` says, on plain values, whether a reservation may be made; ``store`` holds its
SQL (on the primary only: a decision never reads a replica); ``routes`` the HTTP calls.
"""
