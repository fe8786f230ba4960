"""`legionctl demo`: the whole stack on one machine (`runner.py`) and the Enterprise Legion
simulator that feeds it (`simulator.py`, its `roster.py` of agents and `faults.py` to inject)."""
