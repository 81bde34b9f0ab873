"""The read API: segment membership served from Redis, over HTTP/JSON."""
