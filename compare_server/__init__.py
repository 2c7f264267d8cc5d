"""The compare server: ingests runs from capture agents, stores them, and compares them."""
