"""Operations: alerts that reach a person (rules/ holds the pure logic; channels.py delivers,
access_log.py ingests the file server's access log, circuits.py reads the breakers)."""
