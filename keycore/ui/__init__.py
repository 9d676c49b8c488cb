"""What both portals show the same way, so that neither writes it again nor imports the other.

``forms.py``: the provider-configuration forms built from a provider's fields, with
the write-only secret widget, and the one way a service's typed error lands on a
form. ``kms.py``: a provider's setup help written for a tenant, and "where the key
lives". ``changes.py``: an audit event's changes as before → after rows.
``charts.py``: the server-drawn SVG charts. Each portal keeps only what differs for
its audience (its own pages, words and links).
"""
