"""Backend-neutral implementations, written against the Array API standard.

Nothing here validates arguments or converts inputs: the public layer does
that and hands over arrays of one namespace, in the dtype to compute in.
"""
