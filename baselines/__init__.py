"""Every comparison method, one module each (`dense` included); `bench.registry.populate` imports
them all. Modules starting with `_` hold shared helpers."""
