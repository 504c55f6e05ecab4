"""
The Redis layout of a trader's state and the one way to read it: key names and escaped SCAN
patterns (``layout``), the payload codec (``codec``) and serializer (``serializer``), bulk reads
(``reader``), the builders that rebuild NautilusTrader objects exactly as its adapter does
(``entities``), the manifest read back (``manifest``) and the whole persisted state for verify,
inspect, retention and drills (``loader``). The resilient backend's loads use the same parts.
"""
