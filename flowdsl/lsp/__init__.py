"""The flowdsl language server."""
