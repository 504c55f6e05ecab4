"""
The cache backend: the resilient `CacheDatabaseFacade` implementation
(`resilient.ResilientCacheDatabase`), its kernel hook (`kernel_hook`) and observation interface
(`listener`). The Redis layout it writes and reads is ``launcher.state``'s.
"""
