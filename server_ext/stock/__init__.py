"""The stock-server face: how ``server-ext serve`` keeps an XMPP server in step with the registry.

``server.toml``'s ``[stock] kind`` names the server that devices log in to: ``embedded`` (the
project's own), ``ejabberd``, ``prosody`` or ``mongooseim``. Each kind implements
:class:`server_ext.stock.base.StockServer` in a module of this package named after it, with a
``create(context)`` function (:func:`server_ext.stock.base.load_kind`).
"""
