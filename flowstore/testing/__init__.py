"""flowstore's test kit: a pytest plugin (fixtures) and factory-boy factories."""
