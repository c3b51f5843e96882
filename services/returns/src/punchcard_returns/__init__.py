"""The returns service: applies each sale's return once and publishes what became of it.

Records come in through ``handler.ReturnHandler``, the rules are in ``decisions``, the SQL
in ``store``, waiting returns are resolved by ``waiting.PendingReturnResolver`` and
``service.serve`` wires it all together.
"""
