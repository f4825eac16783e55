"""gateway/market/ledger"""
