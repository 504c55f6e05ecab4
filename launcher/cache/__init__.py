"""
The cache backends: NautilusTrader's Redis key layout (`layout`) and the resilient
`CacheDatabaseFacade` implementation (`resilient.ResilientCacheDatabase`), its kernel hook
(`kernel_hook`) and observation interface (`listener`).
"""
