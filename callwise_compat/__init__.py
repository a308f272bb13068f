"""Environment glue shared by every package: nothing here knows about calls, only about how the
pinned CPU torch coexists with PyPI wheels built for CUDA. Domain packages may import it."""
