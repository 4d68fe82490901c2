"""One module per paradigm; each defines Method classes registered in bench/catalog.py."""
