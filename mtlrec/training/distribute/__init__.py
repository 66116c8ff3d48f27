"""Training on more than one device or machine: strategies, the parameter-server trainer, each worker's share of a day."""
