"""Our helpers for the chatmail relay appliance: one module per job."""
