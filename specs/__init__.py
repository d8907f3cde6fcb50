"""Example spec files, bundled as package data (``flowdsl.specs``)."""
