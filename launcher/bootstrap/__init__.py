"""
Bootstrap: before a node trades, know that its store is there (``wait``), safe
(``preflight``), its own (``lease``) and holding a sound copy of the state it left
(``verify`` against the ``manifest``). ``inspect`` renders the same loaded state for
operators. Both read the persisted state through ``launcher.state.loader``.
"""
