"""Storage of the domain chain: the SQLite store (store, on chain_tables,
which the public registry's store shares), chain verification by replay
(verify), the genesis and key files of a data dir (genesis_files), the
connection settings (sqlite_db) and the CLI's text rendering (render)."""
