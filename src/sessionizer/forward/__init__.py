"""`sessionizer forward`: committed final records -> Xtremepush (its Kafka events topic or its HTTP API),
at least once, each record carrying a deterministic UUID so redeliveries de-duplicate downstream."""
