"""KeyCore's cryptographic core: pure functions and small classes, no Django, no database.

* :mod:`~keycore.crypto.formats: byte layouts of every blob, their parsers and constants;
* :mod:`~keycore.crypto.envelope: tenant keys, document encryption (DEK, EDEK, fields), rewrap;
* :mod:`~keycore.crypto.cache: the in-process cache of unwrapped tenant keys;
* :mod:`~keycore.crypto.rootkey: sealing secrets at rest under the operator's root key.

``docs/formats.md`` documents the formats byte by byte.
"""
