"""Genesis: the typed genesis spec, its JSON form, the builder that turns it into a
genesis state and block header, and the bundled devnet template.

May import ``vm`` (to build the state). Must not import ``node``, ``p2p`` or
``consensus``.
"""
