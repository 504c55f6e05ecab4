"""render_inspection on real state written by NautilusTrader's adapter."""

from __future__ import annotations

from launcher.bootstrap.inspect import render_inspection
from tests.test_bootstrap_verify import settings_for
from tests.test_bootstrap_verify import write_sample_state


def test_logical_view(redis_server):
    write_sample_state(redis_server.port)
    text = render_inspection(redis_server.client(), settings_for(redis_server.port))
    assert "Venue SIM" in text
    assert "Account SIM-001 (CASH, USD), 3 events" in text
    assert "total           998_500.00 USD" in text
    assert "Instrument AUD/USD.SIM" in text and "Instrument EUR/USD.SIM" in text
    p1 = next(line for line in text.splitlines() if line.strip().startswith("P-1"))
    assert "LONG" in p1 and "avg open" in p1 and "realized" in p1 and "unrealized" in p1 and "last fill" in p1
    p2 = next(line for line in text.splitlines() if line.strip().startswith("P-2"))
    assert "FLAT" in p2 and "closed" in p2
    open_orders = [line.strip() for line in text.splitlines() if line.startswith(("      O-2 ", "      O-5 "))]
    assert len(open_orders) == 2 and all("ACCEPTED" in line for line in open_orders)
    counts = {line.split()[0]: line.split()[-2] for line in text.splitlines() if line.startswith("  O-") and "events" in line}
    assert counts == {"O-1": "4", "O-2": "3", "O-3": "4", "O-4": "4", "O-5": "3"}
    assert "Strategies with saved state: S-001" in text


def test_empty_store(redis_server):
    text = render_inspection(redis_server.client(), settings_for(redis_server.port))
    assert "nothing persisted" in text
