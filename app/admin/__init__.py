"""The merchant's admin pages: server-rendered HTML over the same domain functions as the API."""
