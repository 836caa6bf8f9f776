"""Code generated from proto/moorage/v1/agents.proto by proto/generate.sh. Do not edit."""
