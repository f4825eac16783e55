"""gateway/market/node"""
