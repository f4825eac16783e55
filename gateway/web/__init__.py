"""The gateway's web dashboard and explorer (docs/API.md, "Web dashboard").

Read-only, served by the gateway process in its own event loop (aiohttp),
127.0.0.1:8080 by default. One responsibility per module:

    app        the aiohttp application: routes, bad-input handling, the
               server with its connection limits (WebServer)
    reader     the SQL reads (parameterised, bounded) over the chain's and
               the streams' SQLite files, in the web's own reader thread
    views      pure functions: store records and the node's state -> the
               JSON documents of /api/v1
    charts     server-side SVG plots (readings, throughput, block interval)
    events     server-sent events: new blocks pushed to /api/v1/events
    pages      the HTML pages (readable without JavaScript)
    script     the pages' JavaScript: live updates, the Merkle proof check

The web package imports the node and the store, never the reverse:
tools/run.py starts the server beside the Gateway.
"""
