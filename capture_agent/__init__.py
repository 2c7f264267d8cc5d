"""The capture agent: runs a prompt set through a model on one device and uploads the records."""
