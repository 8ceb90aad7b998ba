"""Alerting's pure logic: thresholds, incident state, messages, access-log statistics."""
