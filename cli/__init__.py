"""``motus``, the one command-line tool: it starts the node (``motus node start``) and the
devnet, and is the wallet-style client of a running node (keys, transactions, vehicles,
governance, the light client). Entry point: :func:`cli.main.main` (docs/cli.md).

It may import every package of ours: it is the program that puts them together.
"""
