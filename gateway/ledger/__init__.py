"""gateway/ledger"""
