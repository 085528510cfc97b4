"""`sessionizer run`: the pure core on Kafka, exactly once."""
