"""srd's HTTP server: the aiohttp app (``app``), its credentials (``auth``) and one routes
module per surface (``health``, ``alertmanager``, ``failover_api``, ``journal_api``)."""
