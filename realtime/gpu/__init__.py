"""Model residency: which models are loaded on which device, within a memory budget (see gpu_scheduler)."""
