"""The Moorage sidecar: a durable Durable Task protocol server (TaskHubSidecarService)."""
