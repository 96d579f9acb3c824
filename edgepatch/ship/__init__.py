"""Shipping: content-addressed signed bundles, serving them over HTTP, fetching them on a device."""
