"""Fake venue credentials: every environment variable a conf/venue/*.yaml names."""

# Fake credentials for every variable a venue YAML names (Databento checks its key is 32 characters).
FAKE = {
    "BINANCE_TESTNET_API_KEY": "fake-binance-testnet-key-8d1e", "BINANCE_TESTNET_API_SECRET": "fake-binance-secret-77aa",
    "BINANCE_DEMO_API_KEY": "fake-binance-demo-key-0c2f", "BINANCE_DEMO_API_SECRET": "fake-binance-demo-secret-51",
    "BINANCE_API_KEY": "fake-binance-live-key-e3b9", "BINANCE_API_SECRET": "fake-binance-live-secret-a0",
    "BYBIT_TESTNET_API_KEY": "fake-bybit-key-1b7c", "BYBIT_TESTNET_API_SECRET": "fake-bybit-secret-9e4d",
    "BYBIT_DEMO_API_KEY": "fake-bybit-demo-key", "BYBIT_DEMO_API_SECRET": "fake-bybit-demo-secret",
    "BYBIT_API_KEY": "fake-bybit-live-key", "BYBIT_API_SECRET": "fake-bybit-live-secret",
    "OKX_API_KEY": "fake-okx-key-5a0e", "OKX_API_SECRET": "fake-okx-secret-c3f1", "OKX_API_PASSPHRASE": "fake-okx-pass-72",
    "DATABENTO_API_KEY": "db-fakefakefakefakefakefakefake1",
}
