"""The ``edgepatch`` command line: a thin click group over the library."""
