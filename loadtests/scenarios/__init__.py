"""The locustfiles: ``flash_sale.py``, ``omnichannel.py``, ``soak.py`` (see loadtests/README.md)."""
