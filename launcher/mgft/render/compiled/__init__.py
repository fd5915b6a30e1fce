"""Templates compiled by `make golden` (mgft.render.precompiled): do not edit."""

JINJA_VERSION = "3.1.6"
