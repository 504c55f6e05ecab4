"""
The write path of the resilient cache backend (see `launcher.cache.write.writer` for the model).

``commands``  typed commands and `Op`, one atomic facade write, with its lifecycle
``scripts``   the Lua scripts and their SHAs
``batch``     the pure batch builder: coalescing, packing to RESP, mapping replies back to ops
``writer``    the queue, the writer thread, retry/backoff, WAIT, repair, the hand-off to the spill file
``spill``     the fsync'd spill file
``resp``      raw RESP exchange on a redis-py connection
"""
