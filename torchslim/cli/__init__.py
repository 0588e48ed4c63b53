"""The `torchslim` command line: one module per command, each a thin layer over one Python verb.

A command module defines `register(subparsers)`, which adds its parser and sets `func=run`;
`main` discovers every such module in this package.
"""
