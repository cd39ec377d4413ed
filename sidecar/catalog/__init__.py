"""Reading the Consul catalog: client adapter, blocking-query watch, pure parsing."""
